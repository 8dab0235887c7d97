"""Reference detectors for the benchmark: anomalib's PaDiM and PatchCore torch models.

They run on the same offline backbone, input geometry, training split and test images as the
flow models, so a user choosing a detector compares like with like. They are benchmark
baselines only (not exported as run directories).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.image.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, create_feature_extractor
from training.image.data import (
    load_category,
    load_images,
    load_masks,
    split_train_validation,
    typical_geometry,
)
from training.image.metrics import evaluate
from training.image.timing import TIMING_IMAGES, ms_per_image
from training.image.train import GEOMETRY_STRIDE, _subsample, _test_subset, resolve_settings

# timm feature modules of EfficientNet-Lite0 matching ResNet-18's layer1..layer3 (strides 4, 8, 16).
LITE0_LAYERS = ("blocks.1", "blocks.2", "blocks.4")
# Feature modules per backbone (strides 4, 8, 16); the ResNets' are anomalib's PaDiM defaults.
REFERENCE_LAYERS = {
    "efficientnet_lite0": LITE0_LAYERS,
    "resnet18": ("layer1", "layer2", "layer3"),
    "wide_resnet50_2": ("layer1", "layer2", "layer3"),
}
# Coreset selection costs O(patches² · ratio); 0.003 keeps PatchCore to minutes on 2 CPU cores.
PATCHCORE_SAMPLING_RATIO = {"cpu": 0.003, "paper": 0.1}


def _build(name: str, spec: BackboneSpec, profile: str) -> nn.Module:
    """anomalib's model built without weights, then given the (offline) backbone weights."""
    if spec.name not in REFERENCE_LAYERS:
        raise ValueError(
            f"backbone {spec.name!r}: PaDiM / PatchCore support {', '.join(REFERENCE_LAYERS)} "
            "(pass --no-references)"
        )
    layers = list(REFERENCE_LAYERS[spec.name])
    if name == "padim":
        from anomalib.models.image.padim.torch_model import PadimModel

        model = PadimModel(backbone=spec.name, layers=layers, pre_trained=False, n_features=100)
    elif name == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(layers=layers[1:], backbone=spec.name, pre_trained=False)
    else:
        raise ValueError(f"reference must be padim or patchcore, got {name!r}")
    if spec.weights != "random-init":
        indices = model.feature_extractor.idx
        loaded = create_feature_extractor(spec, indices)
        model.feature_extractor.feature_extractor.load_state_dict(loaded.state_dict())
    return model


def _normalize(images: torch.Tensor) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def run_reference(
    data_dir: str | Path,
    name: str,
    out_dir: str | Path,
    *,
    profile: str = "cpu",
    seed: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """Fit PaDiM or PatchCore on the training split; evaluate on the test images; write ``result.json``."""
    settings = resolve_settings("fastflow", profile, overrides)
    category = load_category(data_dir, settings.folder_layout)
    train_paths = _subsample(category.train, settings.max_train_images, seed)
    train_paths, _ = split_train_validation(train_paths, settings.val_fraction, seed)
    input_size = settings.input_size or typical_geometry(category.train, settings.long_side, GEOMETRY_STRIDE)
    torch.manual_seed(seed)
    spec = BackboneSpec(settings.backbone, settings.backbone_weights)
    model = _build(name, spec, profile)
    started = time.perf_counter()
    model.train()
    with torch.no_grad():
        embeddings = []
        for start in range(0, len(train_paths), 32):
            out = model(_normalize(load_images(train_paths[start : start + 32], input_size)))
            embeddings.append(out)
    if name == "padim":
        model.fit()
    else:
        model.subsample_embedding(PATCHCORE_SAMPLING_RATIO[profile], torch.cat(embeddings))
    model.eval()
    test_paths, test_labels, test_masks = _test_subset(category, settings.max_test_images, seed)
    scores, maps = [], []
    with torch.no_grad():
        for start in range(0, len(test_paths), 32):
            batch = model(_normalize(load_images(test_paths[start : start + 32], input_size)))
            scores.append(batch.pred_score.flatten())
            maps.append(batch.anomaly_map.reshape(-1, 1, *input_size))
    timing_images = load_images(test_paths[:TIMING_IMAGES], input_size)
    scoring = {"ms_per_image": round(ms_per_image(lambda x: model(_normalize(x)), timing_images), 2)}
    scoring["images"] = len(timing_images)
    metrics = evaluate(
        torch.cat(scores), torch.tensor(test_labels), torch.cat(maps), load_masks(test_masks, input_size)
    )
    result = {
        "family": name,
        "flow": None,
        "seed": seed,
        "profile": profile,
        "backbone": spec.describe(),
        "input_size": list(input_size),
        "metrics": metrics,
        "scoring": scoring,
        "fit": {
            "epochs_run": 1,
            "stop_reason": "single pass (no gradient training)",
            "failed": False,
            "seconds": round(time.perf_counter() - started, 2),
        },
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result
