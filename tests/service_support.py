"""Helpers of the service tests: real bundles built once per test run, service processes, Redis.

Bundles are trained and exported with the product's own path (``train_tabular_run`` /
the image demo trainer, then ``training.export``) on real data, once per pytest process
(cached here, because fixtures in several modules share them without a shared conftest).
"""

from __future__ import annotations

import asyncio
import atexit
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from tests.conftest import CARDIO_FILE, MAGNETIC_TILE_DIR, REPO_ROOT, data_path

TABULAR_MODEL = "cardio-usflow"
IMAGE_MODEL = "tile-image"
REDIS_TEST_DB = 9
# Just enough training for a servable bundle (the learning tests use tabular_helpers.TINY_FLOW).
BUNDLE_FLOW = {"n_blocks": 2, "hidden": [32, 32], "epochs": 2}

_CACHE: dict[str, Any] = {}


def _cache_root() -> Path:
    if "root" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="usfad-service-tests-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _CACHE["root"] = root
    return _CACHE["root"]


def cardio_rows() -> tuple[np.ndarray, np.ndarray]:
    """Real cardio rows: (300 normal training rows, 64 held-out test rows of both classes), float32."""
    with np.load(data_path(CARDIO_FILE)) as data:
        x, y = data["X"].astype(np.float64), data["y"].ravel()
    rng = np.random.default_rng(0)
    normal, anomalous = rng.permutation(np.flatnonzero(y == 0)), np.flatnonzero(y == 1)
    test = np.concatenate([normal[300:348], anomalous[:16]])
    return x[normal[:300]], x[test].astype(np.float32)


def model_dir() -> Path:
    """A model directory with the tabular bundle (and the image bundle), built once per run."""
    if "model_dir" in _CACHE:
        return _CACHE["model_dir"]
    import torch

    from training.export.writer import export_bundle
    from training.tabular.train import train_tabular_run

    torch.set_num_threads(1)
    root = _cache_root()
    train, _ = cardio_rows()
    source = str(data_path(CARDIO_FILE))
    overrides = dict(BUNDLE_FLOW)
    run = train_tabular_run(
        train, "usflow", root / "runs" / TABULAR_MODEL, overrides=overrides, source=source
    )
    bundles = root / "bundles"
    export_bundle(run, bundles / TABULAR_MODEL, ("onnx",), TABULAR_MODEL)
    export_bundle(
        _train_tiny_image_run(root / "runs" / IMAGE_MODEL), bundles / IMAGE_MODEL, ("onnx",), IMAGE_MODEL
    )
    _CACHE["model_dir"] = bundles
    return bundles


def _train_tiny_image_run(out_dir: Path) -> Path:
    """A tiny FastFlow-USF on 12 real magnetic-tile images, 64×64, one epoch (the image area's trainer)."""
    from training.image.train import train_image_run

    return train_image_run(
        data_path(MAGNETIC_TILE_DIR),
        "fastflow",
        "usf",
        out_dir,
        input_size=(64, 64),
        epochs=1,
        batch_size=8,
        max_train_images=12,
        model_args={"flow_steps": 2},
    )


def tile_images(count: int) -> list[Path]:
    """Real magnetic-tile test images: defective ones first, then good ones."""
    test = data_path(MAGNETIC_TILE_DIR) / "test"
    defects = sorted(
        p for folder in sorted(test.iterdir()) if folder.name != "good" for p in folder.glob("*.jpg")
    )
    goods = sorted((test / "good").glob("*.jpg"))
    return (defects[: count // 2] + goods)[:count]


def copy_model_dir(destination: Path) -> Path:
    """A private copy of the shared model directory (for tests that change bundles)."""
    shutil.copytree(model_dir(), destination)
    return destination


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s; ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the service may not listen yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")


class ServiceProcess:
    """A service process started like docker-compose starts it (command + environment)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (only this process, by its id)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` substitution from this process's environment."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return os.environ.get(name) or default

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}", substitute, value)


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """``command`` and ``environment`` of a service in docker-compose.yml (variables substituted)."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    service = compose["services"][name]
    environment = {key: _interpolate(str(value)) for key, value in service["environment"].items()}
    return list(service["command"]), environment


def compose_process(name: str, overrides: dict[str, str], log_path: Path) -> ServiceProcess:
    """Start compose service ``name`` without Docker: its command and env, host-specific values overridden."""
    command, environment = compose_service(name)
    if command[0] == "python":
        command[0] = sys.executable
    env = {**os.environ, **environment, "OMP_NUM_THREADS": "1", "USFAD_ORT_THREADS": "1", **overrides}
    return ServiceProcess(command, env, log_path)


def redis_url() -> str:
    """The test Redis database URL."""
    return f"redis://127.0.0.1:6379/{REDIS_TEST_DB}"


def unique_prefix() -> str:
    """A key prefix no other test run uses."""
    return f"usfad-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (test clean-up)."""
    import redis

    client = redis.Redis.from_url(redis_url())
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in Prometheus text whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def post_concurrently(
    base_url: str, path: str, payloads: list[dict[str, Any]], concurrency: int, timeout_s: float = 30.0
) -> list[httpx.Response]:
    """POST every JSON payload to ``base_url + path`` with up to ``concurrency`` requests in flight.

    One ``httpx.AsyncClient`` on an event loop rather than one ``httpx.Client`` shared by many
    threads: sharing a sync client's connection pool across threads raced under load in CI
    (``ReadError: [Errno 9] Bad file descriptor`` on the client side).
    """

    async def post_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:
            return await asyncio.gather(*(client.post(path, json=payload) for payload in payloads))

    return asyncio.run(post_all())


def usfad_score(bundle: Path, inputs: list[str], out: Path) -> list[dict[str, str]]:
    """Run the real ``usfad score`` command and read its CSV."""
    command = [
        sys.executable,
        "-m",
        "training.cli",
        "score",
        str(bundle),
        "--input",
        *inputs,
        "--output",
        str(out),
    ]
    subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True, timeout=120)
    return list(csv.DictReader(out.open()))
