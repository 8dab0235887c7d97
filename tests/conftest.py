"""Shared fixtures: where the real data is, deterministic torch.

The real data sets come from one setting, ``USFAD_DATA_DIR`` (default: ``../shared/data`` beside
the repository root). A test that needs a file that is not there is skipped with a reason naming
the setting and the files; with ``USFAD_REQUIRE_DATA=1`` (set by ``.ci/run``) it fails instead,
so CI cannot pass without having run them.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "USFAD_DATA_DIR"
REQUIRE_ENV = "USFAD_REQUIRE_DATA"
DATA_DIR = Path(os.environ.get(DATA_ENV) or REPO_ROOT.parent / "shared" / "data").resolve()
SHARED_DATA = DATA_DIR  # older name, kept for the helpers that import it

# Every real data file the suite reads, relative to DATA_DIR.
CARDIO_FILE = "adbench/6_cardio.npz"
GLASS_FILE = "adbench/14_glass.npz"
MAGNETIC_TILE_DIR = "images/magnetic_tile"
DATA_FILES = (CARDIO_FILE, GLASS_FILE, MAGNETIC_TILE_DIR)


def require_data(*relative: str) -> Path:
    """``DATA_DIR`` when every ``relative`` path exists under it; otherwise skip the calling test.

    Under ``USFAD_REQUIRE_DATA=1`` a missing file fails the test instead of skipping it.
    """
    missing = [name for name in relative if not (DATA_DIR / name).exists()]
    if missing:
        message = (
            f"needs real data {', '.join(missing)} under {DATA_ENV}={DATA_DIR} "
            f"(set {DATA_ENV} to the folder holding adbench/ and images/; default: ../shared/data "
            "beside the repository)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the test {message}", pytrace=False)
        pytest.skip(message)
    return DATA_DIR


def data_path(relative: str) -> Path:
    """``DATA_DIR / relative``, skipping (or failing, see :func:`require_data`) when it is absent."""
    return require_data(relative) / relative


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    # One intra-op thread: the tiny test models gain nothing from more, and on a loaded machine
    # OpenMP threads waiting for each other made them 40x slower.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``USFAD_DATA_DIR``), holding every file in :data:`DATA_FILES`."""
    return require_data(*DATA_FILES)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per skip reason (with its count) above pytest's final "N passed, M skipped" line."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count} skipped: {reason}")
