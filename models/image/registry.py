"""Build an image detector from its family name, flow kind and constructor arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from models.image.backbone import BackboneSpec
from models.image.flow_blocks import FLOW_KINDS

FAMILIES: tuple[str, ...] = ("fastflow", "cflow", "uflow")


def build_detector(
    family: str, flow: str, input_size: Sequence[int], backbone: BackboneSpec, **model_args: Any
) -> nn.Module:
    """A FastFlow / CFlow / U-Flow detector with the given flow blocks (``affine|additive|usf``)."""
    if flow not in FLOW_KINDS:
        raise ValueError(f"flow must be one of {FLOW_KINDS}, got {flow!r}")
    if family == "fastflow":
        from models.image.fastflow import USFastflowModel as detector_class
    elif family == "cflow":
        from models.image.cflow import USCflowModel as detector_class
    elif family == "uflow":
        from models.image.uflow import USUflowModel as detector_class
    else:
        raise ValueError(f"model must be one of {FAMILIES}, got {family!r}")
    return detector_class(input_size, flow=flow, backbone=backbone, **model_args)
