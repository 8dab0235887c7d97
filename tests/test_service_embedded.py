"""``usfad serve`` without Redis: API, in-process queue and one worker in one process.

Started through the real ``usfad`` command (which hands the process over to
``python -m service``); answers must equal ONNX Runtime on the same bundle, batching must
happen through the same worker code, and torch / training must never be imported.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.bundles.bundle import load_bundle
from service.images import decode_image, resize_for_model
from tests.service_support import (
    IMAGE_MODEL,
    TABULAR_MODEL,
    ServiceProcess,
    cardio_rows,
    copy_model_dir,
    metric_value,
    model_dir,
    post_concurrently,
    tile_images,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def embedded(serve_embedded, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ServiceProcess]:
    models = copy_model_dir(tmp_path_factory.mktemp("embedded-models") / "bundles")  # reload test edits it
    return serve_embedded(models, USFAD_MAX_DELAY_MS="5", USFAD_RELOAD_INTERVAL_S="0.2")


def test_embedded_tabular_answers_equal_onnx_runtime(embedded) -> None:
    url, _ = embedded
    _, rows = cardio_rows()
    expected = load_bundle(model_dir() / TABULAR_MODEL, device="cpu").run(rows)
    body = httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": rows.tolist()}).json()
    np.testing.assert_allclose([r["score"] for r in body["results"]], expected.score, rtol=1e-5)
    np.testing.assert_allclose([r["nll"] for r in body["results"]], expected.nll, rtol=1e-5)


def test_embedded_image_answers_equal_onnx_runtime(embedded) -> None:
    url, _ = embedded
    paths = tile_images(2)
    bundle = load_bundle(model_dir() / IMAGE_MODEL, device="cpu")
    height, width = bundle.manifest.image_size
    batch = np.stack([resize_for_model(decode_image(p.read_bytes(), "rgb"), height, width) for p in paths])
    expected = bundle.run(batch)
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    response = httpx.post(f"{url}/score/image", params={"model": IMAGE_MODEL, "map": "none"}, files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in results], expected.score, rtol=1e-5, atol=1e-6)
    assert all(r["anomaly_map"] is None for r in results)


def test_embedded_mode_batches_concurrent_requests(embedded) -> None:
    url, _ = embedded
    _, rows = cardio_rows()
    payloads = [{"model": TABULAR_MODEL, "rows": [row]} for row in rows.tolist()]
    responses = post_concurrently(url, "/score/tabular", payloads, concurrency=32)
    assert [r.status_code for r in responses] == [200] * len(rows)
    text = httpx.get(f"{url}/metrics").text
    total = metric_value(text, "usfad_batch_size_sum", model=TABULAR_MODEL)
    count = metric_value(text, "usfad_batch_size_count", model=TABULAR_MODEL)
    assert total / count > 1.5, f"mean batch {total / count:.2f}"


def test_embedded_process_never_imports_torch_or_training(embedded) -> None:
    url, process = embedded
    assert httpx.get(f"{url}/health/live").json()["heavy_modules"] == []
    assert "embedded: API + in-process queue + one worker" in process.log()


def test_bad_input_in_embedded_mode_is_a_clear_4xx(embedded) -> None:
    url, _ = embedded
    response = httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0, "x"]]})
    assert response.status_code == 422 and response.json()["error"]["field"] == "rows[0]"
    assert httpx.get(f"{url}/health/ready").status_code == 200


def test_worker_command_refuses_to_start_without_redis(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "worker", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "--redis-url" in done.stderr


def test_openapi_describes_every_endpoint(embedded) -> None:
    url, _ = embedded
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {
        "/score/tabular",
        "/score/image",
        "/models",
        "/models/{name}",
        "/health/ready",
        "/metrics",
    } <= set(spec["paths"])
    image_body = spec["paths"]["/score/image"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in image_body and "image/png" in image_body
    assert httpx.get(f"{url}/docs").status_code == 200


def _served_version(url: str) -> str:
    response = httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0] * 21]})
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_bundles_are_reloaded_and_a_broken_update_leaves_the_old_version_serving(embedded) -> None:
    """Runs last in this module: it edits the served model directory."""
    url, process = embedded
    models = Path(process.process.args[process.process.args.index("--model-dir") + 1])
    live = models / TABULAR_MODEL
    old_version = _served_version(url)

    shutil.copytree(live, models / "cardio-copy")  # a new model appears
    wait_until(
        lambda: "cardio-copy" in httpx.get(f"{url}/health/ready").json()["models"], 15, "new model served"
    )

    manifest = json.loads((live / "manifest.json").read_text())  # a broken update: checksum mismatch
    (live / "model.onnx").write_bytes((live / "model.onnx").read_bytes() + b"corrupt")
    (live / "manifest.json").write_text(json.dumps({**manifest, "version": "broken"}))
    wait_until(
        lambda: TABULAR_MODEL in httpx.get(f"{url}/models").json()["refused"], 15, "broken update refused"
    )
    assert _served_version(url) == old_version
    assert "sha256" in httpx.get(f"{url}/models").json()["refused"][TABULAR_MODEL]
    assert (
        metric_value(httpx.get(f"{url}/metrics").text, "usfad_model_load_failures_total", model=TABULAR_MODEL)
        >= 1
    )

    shutil.rmtree(live)  # a good update: served once loaded
    shutil.copytree(models / "cardio-copy", live)
    (live / "manifest.json").write_text(json.dumps({**manifest, "version": "fixed"}))
    wait_until(lambda: _served_version(url) == "fixed", 15, "fixed version served")
