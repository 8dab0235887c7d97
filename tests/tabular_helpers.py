"""Shared helpers of the tabular tests: small real subsets of the shared ADBench data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import CARDIO_FILE
from training.tabular.data import TabularData, load_npz

TINY_FLOW = {"epochs": 6, "hidden": [32, 32], "n_blocks": 2}
TINY = {"epochs": 6, "pretrain_epochs": 3}


def cardio(shared_data: Path) -> TabularData:
    """ADBench ``6_cardio`` (1831 rows, 21 features, 176 anomalies)."""
    return load_npz(shared_data / CARDIO_FILE)


def write_subset(source: Path, target: Path, rows: int, seed: int = 0) -> Path:
    """Write a random ``rows``-row subset of an ADBench file (keeping some anomalies) to ``target``."""
    with np.load(source) as archive:
        x, y = archive["X"], archive["y"]
    rng = np.random.default_rng(seed)
    anomalies = rng.permutation(np.flatnonzero(y == 1))[: max(5, rows // 10)]
    normals = rng.permutation(np.flatnonzero(y == 0))[: rows - len(anomalies)]
    chosen = np.sort(np.concatenate([anomalies, normals]))
    np.savez(target, X=x[chosen], y=y[chosen])
    return target
