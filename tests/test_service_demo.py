"""``usfad serve --demo``: trains (once, cached) and serves two small models; its curl example works."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.service_support import REPO_ROOT, ServiceProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ServiceProcess, Path]]:
    cache = tmp_path_factory.mktemp("demo-cache")
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "training.cli",
        "serve",
        "--demo",
        "--demo-dir",
        str(cache),
        "--port",
        str(port),
    ]
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cache)}
    process = ServiceProcess(argv, env, cache / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health/ready", timeout=2).status_code == 200, 360, "demo ready")
        yield url, process, cache
    finally:
        process.stop()


def test_demo_serves_a_tabular_and_an_image_model(demo) -> None:
    url, _, _ = demo
    models = {m["name"]: m for m in httpx.get(f"{url}/models").json()["models"]}
    assert models["demo-tabular"]["kind"] == "tabular" and models["demo-image"]["kind"] == "image"
    assert "load_breast_cancer" in models["demo-tabular"]["manifest"]["training_data"]["source"]


def test_printed_curl_examples_work_as_pasted(demo) -> None:
    _, process, cache = demo
    lines = [line for line in process.log().splitlines() if line.startswith("curl ")]
    assert len(lines) == 2
    tabular = json.loads(
        subprocess.run(["bash", "-c", lines[0]], capture_output=True, check=True, timeout=60).stdout
    )
    assert [row["is_anomaly"] for row in tabular["results"]] == [False, False, True, True]
    image = json.loads(
        subprocess.run(["bash", "-c", lines[1]], capture_output=True, check=True, timeout=60).stdout
    )
    (result,) = image["results"]
    example = Image.open(cache / "examples" / "image-defect.png")
    assert (result["width"], result["height"]) == example.size
    assert result["anomaly_map"]["format"] == "png" and len(result["anomaly_map"]["png_base64"]) > 100


def test_a_second_demo_run_reuses_the_cache(demo) -> None:
    _, _, cache = demo
    done = subprocess.run(
        [sys.executable, "-m", "training.demo", "--out", str(cache)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0 and "reusing" in done.stdout
