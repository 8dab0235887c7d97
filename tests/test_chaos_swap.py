"""Chaos suite, model swap under load: a new version switches answers with zero 5xx; corrupt ones are refused.

One API and one worker reloading every 0.5 s from a private copy of the model directory.
Each change is written the way a deployment should (a temporary file, then ``os.replace``),
so that what is tested is the service's reaction to a complete new bundle, not a torn write.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.chaos_support import Outcome, Stack, load, service_stack
from tests.service_support import TABULAR_MODEL, cardio_rows, metric_value, model_dir, wait_until

pytestmark = pytest.mark.timeout(300)


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _write_manifest(bundle: Path, manifest: dict) -> None:
    _replace(bundle / "manifest.json", json.dumps(manifest, indent=2).encode())


def _load_until(url: str, rows: list, stop: threading.Event, outcomes: list[tuple[float, Outcome]]) -> None:
    """Rounds of 16 single-row requests at concurrency 8 until ``stop`` (bounded: 400 rounds)."""
    for round_index in range(400):
        if stop.is_set():
            return
        chosen = [rows[(round_index + i) % len(rows)] for i in range(16)]
        batch = [("POST", "/score/tabular", {"json": {"model": TABULAR_MODEL, "rows": [r]}}) for r in chosen]
        finished = load(url, batch, concurrency=8)
        outcomes.extend((time.monotonic(), outcome) for outcome in finished)


def _failures(stack: Stack) -> float:
    return metric_value(stack.worker_metric_text(), "usfad_model_load_failures_total", model=TABULAR_MODEL)


def _served_version(stack: Stack) -> str:
    body = {"model": TABULAR_MODEL, "rows": [[1.0] * 21]}
    return httpx.post(f"{stack.url}/score/tabular", json=body, timeout=30).json()["version"]


def test_model_swap_under_load(tmp_path: Path) -> None:
    models = tmp_path / "bundles"
    shutil.copytree(model_dir(), models)
    bundle = models / TABULAR_MODEL
    manifest = json.loads((bundle / "manifest.json").read_text())
    old, new = manifest["version"], manifest["version"] + "-swapped"
    onnx_bytes = (bundle / "model.onnx").read_bytes()
    _, rows = cardio_rows()
    env = {"USFAD_RELOAD_INTERVAL_S": "0.5"}
    with service_stack(tmp_path / "logs", workers=1, common=env, models=models) as stack:
        stop, outcomes = threading.Event(), []
        loader = threading.Thread(target=_load_until, args=(stack.url, rows.tolist(), stop, outcomes))
        loader.start()
        try:
            time.sleep(1.5)
            swapped_at = time.monotonic()
            _write_manifest(bundle, {**manifest, "version": new})  # a new version of the same graph
            wait_until(lambda: _served_version(stack) == new, 20, "the new version served")
            switch_s = time.monotonic() - swapped_at
            failures = _failures(stack)

            corrupt = onnx_bytes[:-64] + bytes(64)  # 1. checksum mismatch
            _replace(bundle / "model.onnx", corrupt)
            wait_until(lambda: _failures(stack) == failures + 1, 20, "bad checksum refused")
            truncated = onnx_bytes[: len(onnx_bytes) // 2]  # 2. truncated ONNX with a matching checksum
            _replace(bundle / "model.onnx", truncated)
            files = {**manifest["files"], "model.onnx": hashlib.sha256(truncated).hexdigest()}
            _write_manifest(bundle, {**manifest, "version": "truncated", "files": files})
            wait_until(lambda: _failures(stack) == failures + 2, 20, "truncated ONNX refused")
            payload = pickle.dumps({"weights": [1, 2, 3]})  # 3. a pickle listed as a bundle file
            _replace(bundle / "model.pkl", payload)
            files = {**files, "model.pkl": hashlib.sha256(payload).hexdigest()}
            _write_manifest(bundle, {**manifest, "version": "pickled", "files": files})
            wait_until(lambda: _failures(stack) == failures + 3, 20, "pickle refused")
            assert _served_version(stack) == new  # the last good version keeps serving
            refused = httpx.get(f"{stack.url}/models").json()["refused"]
            assert "model.pkl" in refused[TABULAR_MODEL]
            time.sleep(1.0)
        finally:
            stop.set()
            loader.join(timeout=60)
    statuses = [outcome.status for _, outcome in outcomes]
    counts = {status: statuses.count(status) for status in set(statuses)}
    assert statuses == [200] * len(statuses) and len(statuses) > 100, counts
    versions = [(finished, outcome.body["version"]) for finished, outcome in outcomes]
    assert {version for _, version in versions} == {old, new}
    first_new = min(finished for finished, version in versions if version == new)
    assert all(version == new for finished, version in versions if finished > first_new + 1.0)
    print(f"model swap: {len(statuses)} requests, all 200; new version {switch_s:.2f} s after the write")
