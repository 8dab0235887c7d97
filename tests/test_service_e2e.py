"""End to end through real HTTP (uvicorn), real Redis Streams and two real worker processes.

The API and the workers are started exactly as docker-compose.yml starts them (its command
and USFAD_* environment, with host-specific values overridden), without Docker.
"""

from __future__ import annotations

import base64
import io
import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from tests.service_support import (
    IMAGE_MODEL,
    REPO_ROOT,
    TABULAR_MODEL,
    ServiceProcess,
    cardio_rows,
    compose_process,
    delete_prefix,
    free_port,
    metric_value,
    model_dir,
    post_concurrently,
    redis_url,
    tile_images,
    unique_prefix,
    usfad_score,
    wait_until,
)

pytestmark = pytest.mark.timeout(240)
FIFTY_MB = 50 * 1024 * 1024


@dataclass
class Stack:
    url: str
    worker_metrics: list[str]
    prefix: str
    processes: list[ServiceProcess]


def _ready_with_workers(url: str, workers: int) -> bool:
    response = httpx.get(f"{url}/health/ready", timeout=2)
    return response.status_code == 200 and response.json()["workers"] == workers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    prefix, port = unique_prefix(), free_port()
    common = {
        "USFAD_REDIS_URL": redis_url(),
        "USFAD_QUEUE_PREFIX": prefix,
        "USFAD_MODEL_DIR": str(model_dir()),
        "USFAD_RELOAD_INTERVAL_S": "1",
    }
    processes, metrics = [], []
    try:
        for index in range(2):
            metrics_port = free_port()
            worker_env = {
                **common,
                "USFAD_METRICS_PORT": str(metrics_port),
                "USFAD_WORKER_ID": f"e2e-worker-{index}",
                "USFAD_MAX_DELAY_MS": "5",
            }
            processes.append(compose_process("worker", worker_env, logs / f"worker-{index}.log"))
            metrics.append(f"http://127.0.0.1:{metrics_port}/metrics")
        api_env = {**common, "USFAD_HOST": "127.0.0.1", "USFAD_PORT": str(port)}
        processes.append(compose_process("api", api_env, logs / "api.log"))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready_with_workers(url, 2), 90, "API ready with two workers")
        yield Stack(url, metrics, prefix, processes)
    finally:
        for process in processes:
            process.stop()
        delete_prefix(prefix)


@pytest.fixture(scope="module")
def tabular_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, scores, nll) of ``usfad score`` on real cardio rows."""
    _, rows = cardio_rows()
    folder = tmp_path_factory.mktemp("tabular-reference")
    np.savez(folder / "rows.npz", X=rows)
    table = usfad_score(model_dir() / TABULAR_MODEL, [str(folder / "rows.npz")], folder / "scores.csv")
    return rows, np.array([float(r["score"]) for r in table]), np.array([float(r["nll"]) for r in table])


@pytest.fixture(scope="module")
def image_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray]:
    """(image files, scores of ``usfad score``) on real magnetic-tile test images."""
    paths = tile_images(4)
    folder = tmp_path_factory.mktemp("image-reference")
    table = usfad_score(model_dir() / IMAGE_MODEL, [str(p) for p in paths], folder / "scores.csv")
    return paths, np.array([float(r["score"]) for r in table])


def test_ready_with_both_models_on_both_workers(stack: Stack) -> None:
    ready = httpx.get(f"{stack.url}/health/ready").json()
    assert ready["status"] == "ready" and ready["workers"] == 2
    models = {m["name"]: m for m in httpx.get(f"{stack.url}/models").json()["models"]}
    assert set(models) == {TABULAR_MODEL, IMAGE_MODEL}
    assert {w["worker"] for w in models[TABULAR_MODEL]["workers"]} == {"e2e-worker-0", "e2e-worker-1"}
    one = httpx.get(f"{stack.url}/models/{IMAGE_MODEL}").json()
    assert one["manifest"]["input"]["height"] == 64 and one["kind"] == "image"


def test_tabular_scores_equal_usfad_score(stack: Stack, tabular_reference) -> None:
    rows, scores, nll = tabular_reference
    response = httpx.post(f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": rows.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.array([r["score"] for r in body["results"]])
    np.testing.assert_allclose(served, scores, rtol=1e-5)
    np.testing.assert_allclose([r["nll"] for r in body["results"]], nll, rtol=1e-5)
    assert [r["is_anomaly"] for r in body["results"]] == (served > body["threshold"]).tolist()
    manifest = json.loads((model_dir() / TABULAR_MODEL / "manifest.json").read_text())
    assert body["version"] == manifest["version"] and body["threshold"] == manifest["threshold"]["score"]
    assert len(body["request_id"]) == 32


def test_rows_keyed_by_feature_name_and_threshold_override(stack: Stack, tabular_reference) -> None:
    rows, scores, _ = tabular_reference
    names = json.loads((model_dir() / TABULAR_MODEL / "manifest.json").read_text())["input"]["feature_names"]
    objects = [dict(zip(names, row, strict=True)) for row in rows[:4].tolist()]
    cut = float(np.median(scores[:4]))
    body = httpx.post(
        f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": objects, "threshold": cut}
    ).json()
    np.testing.assert_allclose([r["score"] for r in body["results"]], scores[:4], rtol=1e-5)
    assert body["threshold"] == cut
    assert [r["is_anomaly"] for r in body["results"]] == (scores[:4] > cut).tolist()


def test_concurrent_requests_form_batches_and_each_gets_its_own_answer(
    stack: Stack, tabular_reference
) -> None:
    rows, scores, _ = tabular_reference
    before = [httpx.get(url).text for url in stack.worker_metrics]

    payloads = [{"model": TABULAR_MODEL, "rows": [rows[i].tolist()]} for i in list(range(len(rows))) * 2]
    responses = post_concurrently(stack.url, "/score/tabular", payloads, concurrency=64)
    for response in responses:
        assert response.status_code == 200, response.text
    served = [response.json()["results"][0]["score"] for response in responses]
    np.testing.assert_allclose(served, np.concatenate([scores, scores]), rtol=1e-5)
    after = [httpx.get(url).text for url in stack.worker_metrics]
    rows_scored = sum(
        metric_value(a, "usfad_batch_size_sum", model=TABULAR_MODEL)
        - metric_value(b, "usfad_batch_size_sum", model=TABULAR_MODEL)
        for a, b in zip(after, before, strict=True)
    )
    batches = sum(
        metric_value(a, "usfad_batch_size_count", model=TABULAR_MODEL)
        - metric_value(b, "usfad_batch_size_count", model=TABULAR_MODEL)
        for a, b in zip(after, before, strict=True)
    )
    assert rows_scored == 2 * len(rows)
    assert rows_scored / batches > 1.5, (
        f"mean batch size {rows_scored / batches:.2f}: requests were not batched"
    )


def test_images_multipart_and_raw_body_with_maps_at_input_resolution(stack: Stack, image_reference) -> None:
    paths, scores = image_reference
    files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    response = httpx.post(
        f"{stack.url}/score/image", params={"model": IMAGE_MODEL, "map": "png"}, files=files, timeout=60
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in results], scores, rtol=1e-4, atol=1e-5)
    for path, result in zip(paths, results, strict=True):
        original = Image.open(path)
        heat = Image.open(io.BytesIO(base64.b64decode(result["anomaly_map"]["png_base64"])))
        assert result["filename"] == path.name
        assert (result["width"], result["height"]) == original.size == heat.size
        assert result["is_anomaly"] == (result["score"] > response.json()["threshold"])
    raw = httpx.post(
        f"{stack.url}/score/image",
        params={"model": IMAGE_MODEL, "map": "array"},
        content=paths[0].read_bytes(),
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )
    assert raw.status_code == 200, raw.text
    result = raw.json()["results"][0]
    values = np.array(result["anomaly_map"]["values"])
    assert values.shape == (Image.open(paths[0]).height, Image.open(paths[0]).width)
    assert np.isfinite(values).all() and values.min() == pytest.approx(result["anomaly_map"]["low"], rel=1e-6)
    np.testing.assert_allclose(result["score"], scores[0], rtol=1e-4, atol=1e-5)


def _png_bomb() -> bytes:
    from tests.image_support import png_header_only

    return png_header_only(50_000, 50_000)


def _bad_requests(paths: list[Path]) -> list[tuple[str, dict, int, str]]:
    good, tab, img = [1.0] * 21, TABULAR_MODEL, IMAGE_MODEL
    jpeg = paths[0].read_bytes()
    infinity = f'{{"model": "{tab}", "rows": [[Infinity{", 1" * 20}]]}}'
    csv_type = {"content-type": "text/csv"}
    return [
        ("tabular", {"json": {"model": tab, "rows": [good[:20]]}}, 422, "rows[0]"),
        ("tabular", {"content": infinity.replace("Infinity", "NaN")}, 422, "rows[0][0]"),
        ("tabular", {"content": infinity}, 422, "rows[0][0]"),
        ("tabular", {"json": {"model": tab, "rows": [["a"] + good[1:]]}}, 422, "rows[0][0]"),
        ("tabular", {"json": {"model": tab, "rows": []}}, 422, "rows"),
        ("tabular", {"json": {"model": "no-such-model", "rows": [good]}}, 404, "model"),
        ("tabular", {"json": {"model": "../../etc/passwd", "rows": [good]}}, 422, "model"),
        ("tabular", {"json": {"model": img, "rows": [good]}}, 422, "model"),
        ("tabular", {"json": {"rows": [good]}}, 422, "model"),
        ("tabular", {"json": {"model": tab, "rows": [good], "threshold": "high"}}, 422, "threshold"),
        ("tabular", {"content": b'{"model": "cardio-usflow", "rows": [[1,2'}, 422, "body"),
        ("image", {"params": {"model": img}, "content": jpeg[: len(jpeg) // 3]}, 422, "images[0]"),
        ("image", {"params": {"model": img}, "content": b"just text, not an image"}, 415, "images[0]"),
        ("image", {"params": {"model": img}, "content": _png_bomb()}, 413, "images[0]"),
        ("image", {"params": {"model": img}, "content": b""}, 422, "images[0]"),
        ("image", {"params": {"model": "../../etc"}, "content": jpeg}, 422, "model"),
        ("image", {"params": {"model": tab}, "content": jpeg}, 422, "model"),
        ("image", {"params": {"model": img, "map": "gif"}, "content": jpeg}, 422, "map"),
        ("image", {"files": [("images", ("a.jpg", jpeg, "image/jpeg"))], "data": {}}, 422, "model"),
        ("image", {"params": {"model": img}, "content": jpeg, "headers": csv_type}, 415, "content-type"),
    ]  # fmt: skip


def test_bad_inputs_get_clear_4xx_and_the_service_stays_healthy(stack: Stack, image_reference) -> None:
    paths, _ = image_reference
    for endpoint, request, status, field in _bad_requests(paths):
        request = dict(request)
        if "content" in request:
            default_type = "application/json" if endpoint == "tabular" else "image/png"
            request.setdefault("headers", {"content-type": default_type})
        response = httpx.post(f"{stack.url}/score/{endpoint}", **request, timeout=30)
        assert response.status_code == status, (request, response.text)
        error = response.json()["error"]
        assert error["field"] == field and len(error["message"]) > 5, response.text
        assert "Traceback" not in response.text
    assert httpx.get(f"{stack.url}/models/..%2F..%2Fetc").status_code in (404, 422)
    assert httpx.get(f"{stack.url}/models/Bad..name").json()["error"]["field"] == "model"
    assert httpx.get(f"{stack.url}/health/ready").status_code == 200
    ok = httpx.post(f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0] * 21]})
    assert ok.status_code == 200


def _raw_http(url: str, head: bytes, chunks: int = 0) -> bytes:
    """Send ``head`` (and up to ``chunks`` 1 MB chunks) over a raw socket; return the response bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"
        for _ in range(chunks):
            if select.select([conn], [], [], 0)[0]:
                break  # the server already answered
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        response = b""
        while b"\r\n\r\n" not in response:
            data = conn.recv(65536)
            if not data:
                break
            response += data
        return response


def test_a_50_mb_body_is_refused_with_413_without_being_read(stack: Stack) -> None:
    declared = (
        b"POST /score/image?model=tile-image HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % FIFTY_MB
    )
    started = time.monotonic()
    answer = _raw_http(stack.url, declared)  # not a single body byte is sent
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 5
    streamed = (
        b"POST /score/tabular HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert _raw_http(stack.url, streamed, chunks=50).startswith(b"HTTP/1.1 413")
    assert httpx.get(f"{stack.url}/health/ready").status_code == 200


def test_serving_processes_never_import_torch_or_training(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/health/live").json()["heavy_modules"] == []
    client = redis.Redis.from_url(redis_url())
    beats = [json.loads(value) for value in client.hgetall(f"{stack.prefix}:heartbeats").values()]
    client.close()
    assert len(beats) == 2 and all(beat["heavy_modules"] == [] for beat in beats)


def test_prometheus_metrics_of_api_and_workers(stack: Stack) -> None:
    httpx.post(f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0] * 21]})
    httpx.post(f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0]]})
    api = httpx.get(f"{stack.url}/metrics").text
    assert metric_value(api, "usfad_requests_total", endpoint="/score/tabular", status="200") >= 1
    assert metric_value(api, "usfad_requests_total", endpoint="/score/tabular", status="422") >= 1
    assert metric_value(api, "usfad_request_latency_seconds_count", model=TABULAR_MODEL) >= 2
    assert "usfad_queue_depth" in api and "usfad_in_flight_requests" in api
    worker = "".join(httpx.get(url).text for url in stack.worker_metrics)
    for name in ("usfad_queue_wait_seconds", "usfad_compute_seconds", "usfad_batch_size"):
        assert metric_value(worker, name + "_count", model=TABULAR_MODEL) >= 1
    assert metric_value(worker, "usfad_worker_device", device="cpu") == 2
    assert metric_value(worker, "usfad_model_loaded", model=IMAGE_MODEL) == 2


def test_unknown_version_is_404(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url}/score/tabular", json={"model": TABULAR_MODEL, "version": "1999", "rows": [[1.0] * 21]}
    )
    assert response.status_code == 404 and response.json()["error"]["field"] == "version"


# -- degraded modes: Redis down, queue full, deadline passed ------------------------------------
def _start_api(tmp_path: Path, env: dict[str, str]) -> tuple[ServiceProcess, str]:
    port = free_port()
    base = {"USFAD_MODEL_DIR": str(model_dir()), "USFAD_HOST": "127.0.0.1", "USFAD_PORT": str(port)}
    process = compose_process("api", {**base, **env}, tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/health/live", timeout=2).status_code == 200, 60, "API live")
    return process, url


def test_redis_down_gives_503_with_retry_after(tmp_path: Path) -> None:
    process, url = _start_api(tmp_path, {"USFAD_REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        started = time.monotonic()
        response = httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [[1.0] * 21]})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "Redis does not answer" in response.json()["error"]["message"]
        assert time.monotonic() - started < 5
        assert httpx.get(f"{url}/health/ready").status_code == 503
        assert httpx.get(f"{url}/health/live").status_code == 200
    finally:
        process.stop()


def test_full_queue_gives_429_at_once_and_the_deadline_gives_504(tmp_path: Path) -> None:
    prefix = unique_prefix()
    env = {"USFAD_REDIS_URL": redis_url(), "USFAD_QUEUE_PREFIX": prefix, "USFAD_MAX_QUEUE_DEPTH": "1"}
    process, url = _start_api(tmp_path, env)  # no worker: the first request waits until its deadline
    try:
        body = {"model": TABULAR_MODEL, "rows": [[1.0] * 21], "timeout_s": 2}
        first: dict[str, httpx.Response] = {}
        waiting = threading.Thread(
            target=lambda: first.update(r=httpx.post(f"{url}/score/tabular", json=body))
        )
        waiting.start()
        # Each scrape sets the depth from Redis, so this waits until the first job is in the stream.
        queued = f'usfad_queue_depth{{model="{TABULAR_MODEL}"}} 1.0'
        wait_until(lambda: queued in httpx.get(f"{url}/metrics").text, 5, "first request queued")
        started = time.monotonic()
        second = httpx.post(f"{url}/score/tabular", json=body)
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert time.monotonic() - started < 1
        waiting.join(timeout=10)
        assert first["r"].status_code == 504 and "deadline" in first["r"].json()["error"]["message"]
    finally:
        process.stop()
        delete_prefix(prefix)


def test_several_api_processes_share_the_port_answer_correctly_and_one_scrape_sums_them(
    stack: Stack, tabular_reference, tmp_path: Path
) -> None:
    """``--api-workers 2`` on the stack's queue: same answers, no torch, and /metrics sums both
    processes (prometheus_client multiprocess mode, in a directory the service makes and removes)."""
    rows, scores, _ = tabular_reference
    env = {"USFAD_REDIS_URL": redis_url(), "USFAD_QUEUE_PREFIX": stack.prefix, "USFAD_API_WORKERS": "2"}
    process, url = _start_api(tmp_path, env)
    shared = list(Path(tempfile.gettempdir()).glob(f"usfad-metrics-{process.pid}-*"))
    try:
        wait_until(lambda: _ready_with_workers(url, 2), 60, "second API ready")
        assert len(shared) == 1 and shared[0].is_dir()
        sent = {"200": 0, "422": 0}
        pids: set[int] = set()
        for index in range(200):  # a new connection each time: the kernel spreads them over the processes
            if index % 3 == 2:  # bad input, counted with its status
                row, expected = ["x"] * rows.shape[1], None
            else:
                row, expected = rows[index % len(rows)].tolist(), scores[index % len(rows)]
            response = httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": [row]})
            sent[str(response.status_code)] += 1
            if expected is not None:
                assert response.status_code == 200, response.text
                np.testing.assert_allclose(response.json()["results"][0]["score"], expected, rtol=1e-5)
            live = httpx.get(f"{url}/health/live").json()
            assert live["heavy_modules"] == []
            pids.add(live["pid"])
            if len(pids) == 2 and index >= 11:
                break
        assert process.pid not in pids  # the answering processes are uvicorn's workers, not the supervisor
        assert len(pids) == 2 and sent["422"] >= 4, (pids, sent)
        text = httpx.get(f"{url}/metrics").text  # one scrape, answered by one of the two processes
        for status, count in sent.items():
            served = metric_value(text, "usfad_requests_total", endpoint="/score/tabular", status=status)
            assert served == count, (status, sent)
        latency = metric_value(text, "usfad_request_latency_seconds_count", endpoint="/score/tabular")
        assert latency == sum(sent.values())
        assert metric_value(text, "usfad_in_flight_requests") == 0
    finally:
        process.stop()
    assert not shared[0].exists()


def test_api_workers_need_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--api-workers", "2", "--model-dir", str(model_dir())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2 and "--api-workers > 1 needs --redis-url" in done.stderr
