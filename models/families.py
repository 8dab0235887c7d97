"""Every model family by name, and its kind: torch-free, so the CLI lists choices without torch.

This is the one list of names; ``models.factory.build_detector`` builds any of them, and each
tabular family's recipe is its ``FamilySpec`` in ``training/tabular/families.py``.

>>> kind_of("usflow"), kind_of("fastflow")
('tabular', 'image')
>>> TABULAR_FLOW_KIND["usflow"], TABULAR_FLOW_KIND.get("deep_svdd")
('usf', None)
"""

from __future__ import annotations

TABULAR_FAMILIES: tuple[str, ...] = (
    "usflow",
    "nonusflow",
    "deep_svdd",
    "oneflow",
    "dohsc",
    "do2hsc",
    "vae_usflow",
    "vae_nonusflow",
)
# The flow inside a tabular family (run.json "flow"): a USF, an affine flow, or none.
TABULAR_FLOW_KIND: dict[str, str | None] = {
    "usflow": "usf",
    "nonusflow": "affine",
    "oneflow": "usf",
    "vae_usflow": "usf",
    "vae_nonusflow": "affine",
}
IMAGE_FAMILIES: tuple[str, ...] = ("fastflow", "cflow", "uflow")
# Image flow blocks: anomalib's affine coupling, the no-LU ablation, and the USF (docs/glossary.md).
IMAGE_FLOW_KINDS: tuple[str, ...] = ("affine", "additive", "usf")


def kind_of(family: str) -> str:
    """``"tabular"`` or ``"image"``; ``ValueError`` naming the known families otherwise."""
    if family in TABULAR_FAMILIES:
        return "tabular"
    if family in IMAGE_FAMILIES:
        return "image"
    raise ValueError(f"unknown model family {family!r}; expected one of {TABULAR_FAMILIES + IMAGE_FAMILIES}")
