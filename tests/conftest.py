"""Shared fixtures: where the real data is, deterministic torch.

The real data sets come from one setting, ``USFAD_DATA_DIR`` (default: ``../shared/data`` beside
the repository root). A test that needs a file that is not there is skipped with a reason naming
the setting and the files; with ``USFAD_REQUIRE_DATA=1`` (set by ``.ci/run``) it fails instead,
so CI cannot pass without having run them.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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


@pytest.fixture(scope="module")
def serve_embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., tuple[str, Any]]]:
    """Start the service in embedded mode (API, in-process queue, one worker) on a model folder.

    ``serve_embedded(models, module="training.cli", **env)`` runs ``python -m <module> serve``
    (``usfad serve``, or ``service`` itself) on a free port with ``env`` (``USFAD_*`` variables)
    added to one ONNX Runtime / OpenMP thread, and returns ``(url, process)`` once
    ``/health/ready`` answers 200. Every service it started stops when the module's tests end.
    """
    from tests.service_support import ServiceProcess, free_port, wait_until  # it imports this file

    started: list[ServiceProcess] = []

    def start(models: Path, module: str = "training.cli", **env: str) -> tuple[str, ServiceProcess]:
        port = free_port()
        argv = [sys.executable, "-m", module, "serve", "--model-dir", str(models), "--port", str(port)]
        variables = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "USFAD_ORT_THREADS": "1", **env}
        process = ServiceProcess(argv, variables, tmp_path_factory.mktemp("serve") / "serve.log")
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=2).status_code == 200, 90, f"{url} ready")
        return url, process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


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
