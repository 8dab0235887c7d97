"""Helpers of the export tests: tiny runs trained with the product's own training path on real data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.conftest import CARDIO_FILE as CARDIO
from tests.conftest import MAGNETIC_TILE_DIR as MAGNETIC_TILE
from training.tabular.data import load_npz, one_class_split
from training.tabular.train import train_tabular_run

TRAIN_ROWS = 300

# Tiny architectures and 2 epochs: the tests check export, not detection quality.
_FLOW = {"n_blocks": 2, "hidden": [32, 32], "epochs": 2}
_ENCODER = {"widths": [32, 8], "epochs": 2, "pretrain_epochs": 1}
TINY_TABULAR: dict[str, dict[str, Any]] = {
    "usflow": _FLOW,
    "nonusflow": _FLOW,
    "oneflow": _FLOW,
    "vae_usflow": {**_FLOW, "vae_hidden": [32], "latent_dim": 4},
    "vae_nonusflow": {**_FLOW, "vae_hidden": [32], "latent_dim": 4},
    "deep_svdd": _ENCODER,
    "dohsc": _ENCODER,
    "do2hsc": _ENCODER,
}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny models on one thread (thread start-up costs more than it saves), then restore."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class CardioSplit:
    """Normal training rows and held-out test rows (both classes) of ADBench cardio, raw units."""

    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray
    source: str


def cardio_split(shared_data: Path) -> CardioSplit:
    """The paper's one-class split of cardio; the first :data:`TRAIN_ROWS` normal rows for training."""
    data = load_npz(shared_data / CARDIO)
    split = one_class_split(data.y, seed=0)
    return CardioSplit(
        train=data.x[split.train_index[:TRAIN_ROWS]],
        test=data.x[split.test_index].astype(np.float32),
        test_labels=data.y[split.test_index],
        source=str(shared_data / CARDIO),
    )


def train_tiny_tabular(split: CardioSplit, family: str, run_dir: Path) -> Path:
    """A run directory of ``family`` trained by ``train_tabular_run`` with a tiny config."""
    return train_tabular_run(
        split.train, family, run_dir, overrides=dict(TINY_TABULAR[family]), source=split.source
    )


IMAGE_SIZE = (64, 64)
# Tiny image runs: 8 training tiles at 64×64, 2 epochs on cached features of the offline backbone.
TINY_IMAGE: dict[str, Any] = {
    "epochs": 2,
    "max_train_images": 8,
    "max_test_images": 2,
    "input_size": IMAGE_SIZE,
}


def train_tiny_image(shared_data: Path, family: str, flow: str, run_dir: Path) -> Path:
    """A run directory of ``family`` / ``flow`` trained by ``train_image_run`` with a tiny config."""
    from training.image.train import train_image_run

    return train_image_run(shared_data / MAGNETIC_TILE, family, flow, run_dir, **TINY_IMAGE)


def tile_test_images(shared_data: Path, count: int) -> list[Path]:
    """``count`` test tiles spread over every defect class and the good ones (sorted, fixed)."""
    paths = sorted((shared_data / MAGNETIC_TILE / "test").glob("*/*.jpg"))
    step = max(1, len(paths) // count)
    return paths[::step][:count]
