"""Which backbone an image run uses when ``--backbone`` is not given (pure policy, no models built).

The CPU profile always uses the offline ImageNet EfficientNet-Lite0. The paper profile uses the
paper's backbone per family (Appendix E: ResNet-18 for FastFlow, Wide-ResNet-50-2 for CFlow,
MS-CaiT for U-Flow) when the user gave a source for its weights (``--backbone-weights`` or
``--allow-download``); without one it falls back to the offline EfficientNet-Lite0 and says so in
a note that goes into the log, ``run.json`` and the benchmark tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.image.backbone import MCAIT, OFFLINE_BACKBONE

PAPER_BACKBONES = {"fastflow": "resnet18", "cflow": "wide_resnet50_2", "uflow": MCAIT}
# Weight sources that are not pretrained weights the user supplied.
_NO_USER_WEIGHTS = ("offline", "random-init")


@dataclass(frozen=True)
class BackboneChoice:
    """The backbone name, its weight source, and why it differs from the paper's (if it does)."""

    name: str
    weights: str
    note: str | None = None


def resolve_backbone(family: str, profile: str, backbone: str | None, weights: str | None) -> BackboneChoice:
    """The backbone of a ``family`` run in ``profile``; an explicit ``backbone`` always wins.

    ``weights``: ``"offline"`` / ``None`` (nothing given), a path, ``"hub"`` or ``"random-init"``.
    """
    weights = weights or "offline"
    if backbone:
        return BackboneChoice(backbone, weights)
    if profile != "paper":
        return BackboneChoice(OFFLINE_BACKBONE, weights)
    paper = PAPER_BACKBONES[family]
    if weights not in _NO_USER_WEIGHTS:
        return BackboneChoice(paper, weights)
    note = (
        f"paper profile without a weight source: using {OFFLINE_BACKBONE} ({weights}) instead of "
        f"the paper's {family} backbone {paper}; pass --backbone-weights PATH or --allow-download "
        "to use it"
    )
    return BackboneChoice(OFFLINE_BACKBONE, weights, note)
