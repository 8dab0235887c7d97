"""Scoring time per image, measured the same way for the flows and the reference models."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

TIMING_IMAGES = 32
TIMING_BATCH = 8


@torch.no_grad()
def ms_per_image(
    score: Callable[[torch.Tensor], object], images: torch.Tensor, batch: int = TIMING_BATCH
) -> float:
    """Wall-clock milliseconds per image of ``score`` over ``images`` in batches of ``batch``.

    One batch is run first and not counted (allocations, lazy caches). The figure includes the
    backbone (nothing is cached) and depends on the machine and its load, so it is reported
    beside the metrics, never asserted.
    """
    score(images[:batch])
    started = time.perf_counter()
    for start in range(0, images.shape[0], batch):
        score(images[start : start + batch])
    return 1000 * (time.perf_counter() - started) / images.shape[0]
