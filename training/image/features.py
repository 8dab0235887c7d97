"""Frozen-backbone features of image files, optionally cached on disk across runs.

The backbone is frozen and there is no augmentation, so an image's features depend only on
the backbone (and its weights), the input size and the feature layers. Runs of the benchmark
that share these (every flow and seed of a family) reuse one cached copy instead of running the
backbone again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from models.image.scorer import ImageScorer
from training.image.data import load_images


@torch.no_grad()
def extract_features(
    scorer: ImageScorer, images: torch.Tensor, device: str, chunk: int = 32
) -> list[torch.Tensor]:
    """Frozen-backbone features of uint8 images ``[N, H, W, 3]``, one tensor per scale."""
    detector = scorer.detector
    parts: list[list[torch.Tensor]] = []
    for start in range(0, images.shape[0], chunk):
        batch = scorer.normalize(images[start : start + chunk].to(device))
        parts.append(detector.extract(batch))
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


def _cache_key(scorer: ImageScorer, paths: list[Path], size: tuple[int, int], backbone: str) -> str:
    probe = torch.zeros(1, 3, *size, device=scorer.mean.device)
    layers = [list(f.shape[1:]) for f in scorer.detector.extract(probe)]
    described = json.dumps([backbone, list(size), layers, [f"{p}:{p.stat().st_size}" for p in paths]])
    return hashlib.sha256(described.encode()).hexdigest()[:24]


@torch.no_grad()
def file_features(
    scorer: ImageScorer,
    paths: list[Path],
    size: tuple[int, int],
    device: str,
    backbone: str,
    cache_dir: str | Path | None = None,
) -> list[torch.Tensor]:
    """Features of the image files ``paths``; read from / written to ``cache_dir`` when given.

    ``backbone`` must describe the backbone and its weights (``BackboneSpec.describe()``); a
    random-init backbone is never cached (its weights differ from run to run).
    """
    if cache_dir is None or "random-init" in backbone:
        return extract_features(scorer, load_images(paths, size), device)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{_cache_key(scorer, paths, size, backbone)}.pt"
    if file.is_file():
        return [f.to(device) for f in torch.load(file, map_location="cpu", weights_only=True)]
    features = extract_features(scorer, load_images(paths, size), device)
    partial = file.with_suffix(f".{os.getpid()}.tmp")
    torch.save([f.cpu() for f in features], partial)
    partial.replace(file)  # atomic: concurrent bench processes never read a half-written file
    return features
