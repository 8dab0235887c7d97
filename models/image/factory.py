"""Build an image detector from its family name, flow kind and constructor arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from models.families import IMAGE_FAMILIES, IMAGE_FLOW_KINDS
from models.image.backbone import BackboneSpec


def build_image_detector(
    family: str, flow: str, input_size: Sequence[int], backbone: BackboneSpec, **model_args: Any
) -> nn.Module:
    """A FastFlow / CFlow / U-Flow detector with the given flow blocks (``affine|additive|usf``)."""
    if flow not in IMAGE_FLOW_KINDS:
        raise ValueError(f"flow must be one of {IMAGE_FLOW_KINDS}, got {flow!r}")
    if family == "fastflow":
        from models.image.fastflow import USFastflowModel as detector_class
    elif family == "cflow":
        from models.image.cflow import USCflowModel as detector_class
    elif family == "uflow":
        from models.image.uflow import USUflowModel as detector_class
    else:
        raise ValueError(f"model must be one of {IMAGE_FAMILIES}, got {family!r}")
    return detector_class(input_size, flow=flow, backbone=backbone, **model_args)


def image_detector_from_config(config: dict[str, Any], backbone_weights: str = "random-init") -> nn.Module:
    """The detector described by an image run's ``config`` (run.json), backbone weights aside.

    ``backbone_weights`` defaults to ``random-init``: a run's ``weights.pt`` holds the whole
    scorer, frozen backbone included, so nothing is read or downloaded.
    """
    missing = [key for key in ("family", "flow", "input_size", "backbone") if key not in config]
    if missing:
        raise ValueError(f"config lacks {', '.join(missing)}")
    backbone = BackboneSpec(config["backbone"]["name"], backbone_weights)
    return build_image_detector(
        config["family"], config["flow"], config["input_size"], backbone, **config.get("model_args", {})
    )
