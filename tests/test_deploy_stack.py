"""`docker compose up` for real: images built, four services in containers, two workers scored through.

Needs a Docker engine with the CI base images (``bash docker/ci/engine.sh start``, which .ci/run
runs first). Without an engine the module is skipped, except in CI (``CI`` set), where that is a
failure. The images are built from the same Dockerfiles users build, with ``BASE_IMAGE`` (and
the redis and prometheus images) pointed at the local Debian-built ones, because container
registries cannot be reached here. docs/deployment.md says what this runs and how long it takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service_support import (
    IMAGE_MODEL,
    REPO_ROOT,
    TABULAR_MODEL,
    cardio_rows,
    free_port,
    model_dir,
    tile_images,
    usfad_score,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]  # setup may train the shared bundles
STATE = Path(os.environ.get("USFAD_CI_STATE", "/var/tmp/usfad-ci"))
COMPOSE = ["docker-compose", "-f", str(REPO_ROOT / "docker-compose.yml")]


@dataclass
class Stack:
    url: str
    prometheus: str
    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``docker-compose -p <project> ARGS`` on this stack."""
        return subprocess.run(
            [*COMPOSE, "-p", self.project, *args],
            env=self.env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )


def _engine_images() -> dict[str, str]:
    """The CI images that docker/ci/engine.sh built, or skip (fail in CI) without an engine."""
    engine = shutil.which("docker") and not subprocess.run(["docker", "info"], capture_output=True).returncode
    images = STATE / "images.env"
    if not engine or shutil.which("docker-compose") is None or not images.is_file():
        message = "no Docker engine / CI images: run `bash docker/ci/engine.sh start` first"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return dict(line.split("=", 1) for line in images.read_text().split())


def _ready(url: str, workers: int) -> bool:
    response = httpx.get(f"{url}/health/ready", timeout=3)
    return response.status_code == 200 and response.json()["workers"] >= workers


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    images = _engine_images()
    # Bundles readable by the images' unprivileged user (pytest's temporary folders are 0700).
    bundles = Path(tempfile.mkdtemp(prefix="usfad-stack-bundles-", dir="/var/tmp"))
    shutil.copytree(model_dir(), bundles, dirs_exist_ok=True)
    for path in [bundles, *bundles.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    api_port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        **images,
        "USFAD_MODELS": str(bundles),
        "USFAD_API_PORT": str(api_port),
        "USFAD_PROMETHEUS_PORT": str(prometheus_port),
    }
    urls = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}"
    stack = Stack(*urls, f"usfad-ci-{os.getpid()}", env)
    started = time.monotonic()
    try:
        stack.compose("build", "-q", timeout=600)
        built = time.monotonic()
        stack.compose("up", "-d", "--scale", "worker=2", timeout=300)
        wait_until(lambda: _ready(stack.url, 2), 180, "/health/ready with 2 workers")
        print(f"\nstack: build {built - started:.0f} s, up to ready {time.monotonic() - built:.0f} s")
        yield stack
    except Exception:
        print(stack.compose("logs", "--no-color", "--tail", "15", check=False).stdout)
        raise
    finally:
        stack.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)
        shutil.rmtree(bundles, ignore_errors=True)


def test_both_models_on_both_workers_and_redis_keeps_an_append_only_file(stack: Stack) -> None:
    ready = httpx.get(f"{stack.url}/health/ready").json()
    assert ready["workers"] == 2 and set(ready["models"]) == {TABULAR_MODEL, IMAGE_MODEL}
    models = {m["name"]: m for m in httpx.get(f"{stack.url}/models").json()["models"]}
    assert {w["device"] for w in models[TABULAR_MODEL]["workers"]} == {"cpu"}
    appendonly = stack.compose("exec", "-T", "redis", "redis-cli", "config", "get", "appendonly").stdout
    assert appendonly.split() == ["appendonly", "yes"]


def test_tabular_and_image_answers_equal_usfad_score(stack: Stack, tmp_path: Path) -> None:
    _, rows = cardio_rows()
    rows = rows[:16]
    np.savez(tmp_path / "rows.npz", X=rows)
    expected = usfad_score(model_dir() / TABULAR_MODEL, [str(tmp_path / "rows.npz")], tmp_path / "tab.csv")
    response = httpx.post(
        f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": rows.tolist()}, timeout=30
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for key, rtol in (("score", 1e-5), ("nll", 1e-4)):
        np.testing.assert_allclose([r[key] for r in results], [float(e[key]) for e in expected], rtol=rtol)

    (image,) = tile_images(1)
    expected = usfad_score(model_dir() / IMAGE_MODEL, [str(image)], tmp_path / "img.csv")
    response = httpx.post(
        f"{stack.url}/score/image",
        params={"model": IMAGE_MODEL, "map": "array"},
        files=[("images", (image.name, image.read_bytes(), "image/jpeg"))],
        timeout=60,
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    np.testing.assert_allclose(result["score"], float(expected[0]["score"]), rtol=1e-4, atol=1e-5)


def test_prometheus_reports_the_api_and_both_workers_up(stack: Stack) -> None:
    def targets() -> list[dict]:
        return httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]

    def all_up() -> bool:
        active = targets()
        jobs = sorted(target["labels"]["job"] for target in active)
        up = all(target["health"] == "up" for target in active)
        return up and jobs == ["usfad-api", "usfad-worker", "usfad-worker"]

    try:
        wait_until(all_up, 90, "Prometheus: the API and 2 workers up")
    except TimeoutError:
        pytest.fail(f"targets: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets()]}")
    query = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": "sum(up)"}, timeout=5).json()
    assert float(query["data"]["result"][0]["value"][1]) == 3


def test_gpu_overlay_is_accepted_by_docker_compose(stack: Stack) -> None:
    overlay = stack.compose("-f", str(REPO_ROOT / "docker-compose.gpu.yml"), "config", check=False)
    assert overlay.returncode == 0, overlay.stderr
    assert "onnxruntime-gpu[cuda,cudnn]==" in overlay.stdout and "driver: nvidia" in overlay.stdout


def test_killing_one_worker_leaves_the_stack_ready_and_scoring(stack: Stack) -> None:
    workers = stack.compose("ps", "-q", "worker").stdout.split()
    assert len(workers) == 2
    subprocess.run(["docker", "kill", workers[0]], check=True, capture_output=True, timeout=60)
    rows = cardio_rows()[1][:4].tolist()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert httpx.get(f"{stack.url}/health/ready", timeout=5).status_code == 200
        response = httpx.post(
            f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": rows}, timeout=30
        )
        assert response.status_code == 200, response.text
        time.sleep(1)
    inspect = ["docker", "inspect", "-f", "{{.State.Running}}", workers[1]]
    running = subprocess.run(inspect, capture_output=True, text=True, check=True)
    assert running.stdout.strip() == "true"
