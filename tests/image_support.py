"""Shared helpers for the image tests: a few real Magnetic Tile images at a tiny size."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import MAGNETIC_TILE_DIR, data_path

TINY_SIZE = (64, 96)  # H x W: not square on purpose


def magnetic_tile() -> Path:
    """The real Magnetic Tile category (MVTec layout); skips the test when the data is absent."""
    return data_path(MAGNETIC_TILE_DIR)


def tiny_images(count: int = 4, size: tuple[int, int] = TINY_SIZE) -> torch.Tensor:
    """``count`` real training images as uint8 ``[N, H, W, 3]``."""
    from training.image.data import load_category, load_images

    category = load_category(magnetic_tile())
    return load_images(category.train[:count], size)


def defective_paths(count: int) -> list[Path]:
    """The first ``count`` defective test images."""
    from training.image.data import load_category

    category = load_category(magnetic_tile())
    return [p for p, label in zip(category.test, category.test_labels, strict=True) if label][:count]
