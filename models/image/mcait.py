"""U-Flow's MS-CaiT backbone (anomalib's ``CaitFeatureExtractor``) built without a download.

anomalib's extractor creates ``cait_m48_448`` and ``cait_s24_224`` with ``pretrained=True``
hard-coded in its ``__init__``. This subclass skips that ``__init__``, builds the same two timm
models with ``pretrained=False`` and gives them weights from one of:

- a **folder** holding the two timm checkpoints, ``cait_m48_448.<suffix>`` and
  ``cait_s24_224.<suffix>`` (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``, timm naming);
- a **single file** holding both state dicts: ``{"cait_m48_448": {...}, "cait_s24_224": {...}}``
  (``torch.save``);
- the hub (``"hub"``, only with ``--allow-download``) or ``"random-init"`` (explicit, stamped).

The feature computation (``extract_features``: CaiT-M48 blocks 0–40 at 448×448 and CaiT-S24
blocks 0–20 at 224×224; ``normalize_features``: each CaiT's own frozen LayerNorm, reshaped to
28×28 and 14×14 maps) is anomalib's, inherited unchanged. It needs 448×448 input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from anomalib.models.image.uflow.feature_extraction import CaitFeatureExtractor
from torch import nn

from models.image.backbone import (
    MCAIT_INPUT_SIZE,
    MCAIT_NO_WEIGHTS,
    BackboneSpec,
    checkpoint_in_folder,
    load_matching,
    load_state_file,
)

MCAIT_PARTS = ("cait_m48_448", "cait_s24_224")  # scale 1 (stride 16), scale 2 (stride 32)


def check_mcait_input_size(input_size: tuple[int, int]) -> None:
    """MS-CaiT's positional embeddings fix its input at 448×448."""
    if tuple(input_size) != MCAIT_INPUT_SIZE:
        raise ValueError(
            f"input_size: MS-CaiT (--backbone mcait) needs 448x448 input, got {input_size[0]}x{input_size[1]}"
        )


def mcait_state_dicts(weights: str) -> dict[str, dict[str, torch.Tensor]] | None:
    """The two CaiTs' state dicts from ``weights`` (a folder or one file); None for hub / random-init."""
    if weights == "offline":
        raise ValueError(MCAIT_NO_WEIGHTS)
    if weights in ("hub", "random-init"):
        return None
    path = Path(weights)
    if path.is_dir():
        return {name: load_state_file(checkpoint_in_folder(path, name)) for name in MCAIT_PARTS}
    both = load_state_file(path)
    missing = [name for name in MCAIT_PARTS if not isinstance(both.get(name), dict)]
    if missing:
        raise KeyError(
            f"backbone_weights: {path} must hold a dict with the state dicts {MCAIT_PARTS} "
            f"(missing {', '.join(missing)}), or pass a folder with one checkpoint per CaiT"
        )
    return {name: both[name] for name in MCAIT_PARTS}


class OfflineMCaitFeatureExtractor(CaitFeatureExtractor):
    """anomalib's MS-CaiT extractor on CaiTs built offline; frozen, always in eval mode."""

    def __init__(self, backbone: BackboneSpec) -> None:
        import timm

        states = mcait_state_dicts(backbone.weights)  # errors before the 1.4 GB model is built
        nn.Module.__init__(self)  # not CaitFeatureExtractor.__init__: it downloads both CaiTs
        # The attributes anomalib's __init__ sets (its forward and normalize_features read them).
        self.input_size = MCAIT_INPUT_SIZE[0]
        hub = backbone.weights == "hub"
        self.extractor1 = timm.create_model(MCAIT_PARTS[0], pretrained=hub)
        self.extractor2 = timm.create_model(MCAIT_PARTS[1], pretrained=hub)
        self.channels = [self.extractor1.embed_dim, self.extractor2.embed_dim]  # [768, 384]
        self.scale_factors = [16, 32]  # 448 / 28 and 448 / 14
        self.scales = range(len(self.scale_factors))
        if states is not None:
            load_matching(self.extractor1, states[MCAIT_PARTS[0]])
            load_matching(self.extractor2, states[MCAIT_PARTS[1]])
        for parameter in self.parameters():
            parameter.requires_grad = False
        self.eval()
