"""Shared fixtures: paths to the real shared data, deterministic torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny models: one thread is fastest and avoids contention


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets beside the project (``../shared/data``)."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA
