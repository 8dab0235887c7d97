"""/docs and /redoc render offline in a real headless Chromium (Debian's ``chromium``).

The service runs in its embedded mode with an empty model directory (the pages need only
``/openapi.json``). Chromium gets a host-resolver rule that makes every name but 127.0.0.1
unresolvable, so a page that still pulled Swagger UI or ReDoc from a CDN would render blank and
fail here. Without Chromium the module is skipped, except in CI (``CI`` set), where .ci/run
installs it and its absence is a failure. To refresh the screenshot in docs/assets:
``USFAD_UPDATE_SCREENSHOT=1 pytest tests/test_service_docs_page.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service_support import REPO_ROOT, ServiceProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(180)
SCREENSHOT = REPO_ROOT / "docs" / "assets" / "service_docs_offline.png"
# Flags as root in a sandbox with a closed network (/work/.library/env/machines/python-svc.md).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--virtual-time-budget=20000",
]


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("no chromium: apt-get install chromium")
    return found


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("docs-page")
    (folder / "models").mkdir()
    port = free_port()
    env = {**os.environ, "USFAD_MODEL_DIR": str(folder / "models"), "USFAD_HOST": "127.0.0.1"}
    env.pop("USFAD_REDIS_URL", None)
    process = ServiceProcess(
        [sys.executable, "-m", "service", "serve", "--port", str(port)], env, folder / "serve.log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/health/live", timeout=2).status_code == 200, 60, "API live")
        yield base
    finally:
        process.stop()


def _chromium_run(tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_docs_page_references_only_this_server(url: str) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{url}{page}").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(asset.startswith("/") for asset in assets), (page, assets)
        for asset in assets:
            assert httpx.get(f"{url}{asset}").status_code == 200, asset


def test_swagger_ui_renders_the_two_scoring_operations(url: str, tmp_path: Path) -> None:
    dom = _chromium_run(tmp_path, "--dump-dom", f"{url}/docs")
    paths = set(re.findall(r'class="opblock-summary-path"[^>]*data-path="([^"]+)"', dom))
    paths |= set(re.findall(r'data-path="([^"]+)"[^>]*class="opblock-summary-path"', dom))
    assert {"/score/tabular", "/score/image"} <= paths, paths
    screenshot = tmp_path / "docs.png"
    window = ("--hide-scrollbars", "--window-size=1280,1100")
    _chromium_run(tmp_path, *window, f"--screenshot={screenshot}", f"{url}/docs")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    if os.environ.get("USFAD_UPDATE_SCREENSHOT"):
        shutil.copyfile(screenshot, SCREENSHOT)
    assert SCREENSHOT.is_file()


def test_redoc_renders_the_two_scoring_operations(url: str, tmp_path: Path) -> None:
    dom = _chromium_run(tmp_path, "--dump-dom", f"{url}/redoc")
    assert "operation/score_tabular_score_tabular_post" in dom
    assert "operation/score_image_score_image_post" in dom
