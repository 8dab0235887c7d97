"""Chaos suite, hostile inputs: each gets its documented 4xx naming the field, and the service stays ready.

One API and one worker over real Redis, started with docker-compose's commands and
environment, serving the real cardio and magnetic-tile bundles plus a hand-built image graph
that overflows (``tests/chaos_bundles.py``). Covers defects 1, 2, 4, 5, 6 and 7 of issue 13,
path tricks in model names, the OpenAPI limits, metrics equal to the client's counts, and a
schemathesis run of ≥ 1,000 generated requests with zero 5xx.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.chaos_bundles import SIZE, overflow_image_bundle
from tests.chaos_support import Stack, load, service_stack
from tests.image_support import png_header_only, png_with_rows
from tests.service_support import (
    IMAGE_MODEL,
    TABULAR_MODEL,
    cardio_rows,
    metric_value,
    model_dir,
    tile_images,
)

pytestmark = pytest.mark.timeout(300)
OVERFLOW_MODEL = "overflow-image"
GOOD = [1.0] * 21


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    models = tmp_path_factory.mktemp("chaos-inputs") / "bundles"
    shutil.copytree(model_dir(), models)
    overflow_image_bundle(models / OVERFLOW_MODEL)
    with service_stack(tmp_path_factory.mktemp("chaos-inputs-logs"), workers=1, models=models) as running:
        yield running


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def tabular(stack: Stack, body: dict | bytes, **kwargs) -> httpx.Response:
    if isinstance(body, bytes):
        headers = kwargs.pop("headers", {"content-type": "application/json"})
        return httpx.post(f"{stack.url}/score/tabular", content=body, headers=headers, timeout=30, **kwargs)
    return httpx.post(f"{stack.url}/score/tabular", json=body, timeout=30, **kwargs)


def refused(response: httpx.Response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field and len(error["message"]) > 5, response.text


# -- defect 1: overflow is never "normal" ---------------------------------------------------------
def test_extreme_rows_are_anomalies_with_a_reason_never_normal(stack: Stack) -> None:
    """Rows of 3e38 (finite in float32) overflow the flow: null score, is_anomaly true, a reason."""
    _, rows = cardio_rows()
    extreme = [[3e38] * 21, [-3e38] * 21, [1e30] * 21, [1e19] * 21, [3e38] + [0.0] * 20]
    before = stack.worker_metric_text()
    response = tabular(stack, {"model": TABULAR_MODEL, "rows": extreme + rows[:3].tolist()})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(result["is_anomaly"] for result in results[:5]), results[:5]
    overflowed = [result for result in results[:5] if result["reason"] is not None]
    assert results[0]["reason"] == "score_not_finite" and len(overflowed) >= 1
    for result in overflowed:
        assert (result["score"], result["nll"], result["is_anomaly"]) == (None, None, True), result
    for result in results[:5]:
        if result["reason"] is None:  # finite: then it is far above the threshold
            assert result["score"] > response.json()["threshold"]
    assert all(r["reason"] is None and isinstance(r["score"], float) for r in results[5:])
    after = stack.worker_metric_text()
    counted = metric_value(after, "usfad_overflowed_total", model=TABULAR_MODEL) - metric_value(
        before, "usfad_overflowed_total", model=TABULAR_MODEL
    )
    assert counted == len(overflowed)


def test_an_overflowing_image_is_an_anomaly_with_a_reason_and_no_map(stack: Stack) -> None:
    dark = np.zeros((SIZE, SIZE), dtype=np.uint8)
    bright = dark.copy()
    bright[2, 5] = 200  # exp(200) overflows float32
    pngs = [png(Image.fromarray(array)) for array in (dark, bright)]
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
    response = httpx.post(
        f"{stack.url}/score/image", params={"model": OVERFLOW_MODEL, "map": "array"}, files=files, timeout=30
    )
    assert response.status_code == 200, response.text
    normal, overflowed = response.json()["results"]
    assert normal["score"] == 1.0 and normal["is_anomaly"] is False and normal["reason"] is None
    assert normal["anomaly_map"]["values"][0][0] == 1.0
    assert overflowed["score"] is None and overflowed["nll"] is None and overflowed["is_anomaly"] is True
    assert overflowed["reason"] == "score_not_finite" and overflowed["anomaly_map"] is None


# -- defect 2: deep JSON --------------------------------------------------------------------------
def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on an open connection and read exactly one response."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the response head"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_deep_json_is_422_naming_body_and_the_connection_stays_usable(stack: Stack) -> None:
    host, port = stack.url.removeprefix("http://").split(":")
    deep = b'{"model": "cardio-usflow", "rows": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    medium = b'{"model": "cardio-usflow", "rows": ' + b"[" * 900 + b"]" * 900 + b"}"
    good = json.dumps({"model": TABULAR_MODEL, "rows": [GOOD]}).encode()

    def request(body: bytes) -> bytes:
        return (
            b"POST /score/tabular HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for body in (deep, medium):
            status, headers, answer = _exchange(sock, request(body))
            assert status == 422 and headers.get("connection") != "close", (status, headers)
            assert json.loads(answer)["error"]["field"] in ("body", "rows[0]")
        status, _, answer = _exchange(sock, request(good))  # the same keep-alive connection
        assert status == 200 and len(json.loads(answer)["results"]) == 1
    assert stack.ready()


# -- defect 7: content types, duplicate keys --------------------------------------------------------
def test_duplicate_keys_and_non_json_bodies_are_refused(stack: Stack) -> None:
    body = json.dumps({"model": TABULAR_MODEL, "rows": [GOOD]})
    refused(tabular(stack, body.replace('{"model"', '{"model": "x", "model"').encode()), 422, "body")
    others = "".join(f', "f{i}": 1' for i in range(1, 21))
    keyed = '{"model": "cardio-usflow", "rows": [{"f0": 1, "f0": 2' + others
    response = tabular(stack, (keyed + "}]}").encode())
    refused(response, 422, "body")
    assert "duplicate key 'f0'" in response.json()["error"]["message"]
    forms = ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x")
    for content_type in ("text/plain", *forms):
        refused(tabular(stack, body.encode(), headers={"content-type": content_type}), 415, "content-type")
    ok = tabular(stack, body.encode(), headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text
    huge = b'{"model": "cardio-usflow", "rows": [[1e999' + b", 1" * 20 + b"]]}"
    refused(tabular(stack, huge), 422, "rows[0][0]")


# -- defects 4, 5, 6 and other hostile images -------------------------------------------------------
def _image(stack: Stack, content: bytes, content_type: str = "image/png", model: str = IMAGE_MODEL):
    return httpx.post(
        f"{stack.url}/score/image",
        params={"model": model, "map": "none"},
        content=content,
        headers={"content-type": content_type},
        timeout=60,
    )


def test_hostile_images_get_their_documented_4xx(stack: Stack) -> None:
    tile = Image.open(tile_images(1)[0]).convert("RGB")
    started = time.monotonic()
    refused(_image(stack, png_with_rows(6000, 6000, 1)), 413, "images[0]")  # the file: 36 MP
    response = _image(stack, png_with_rows(3900, 3900, 1))  # defect 4: under the pixel limit, one row
    refused(response, 422, "images[0]")
    assert "holds" in response.json()["error"]["message"] and time.monotonic() - started < 5
    refused(_image(stack, png_header_only(50_000, 50_000)), 413, "images[0]")  # declared bomb
    refused(_image(stack, png_header_only(4100, 4000)), 413, "images[0]")  # 16.4 MP > 16 MP per image
    zeros = png(Image.new("L", (5000, 4000)))  # a real zlib bomb: 20 MP of zeros in a few kB
    assert len(zeros) < 100_000
    refused(_image(stack, zeros), 413, "images[0]")
    polyglots = {
        "gif": encoded(tile.convert("P"), "GIF"),
        "webp": encoded(tile, "WEBP"),
        "gif+script": b"GIF89a/*\x00\x00*/=1;alert(1)//" + b"\x00" * 64,
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "zip": b"PK\x03\x04" + b"\x00" * 100,
        "html": b"<html><body>not an image</body></html>",
    }
    for name, data in polyglots.items():
        response = _image(stack, data)
        assert response.status_code == 415, (name, response.text)
        assert response.json()["error"]["field"] == "images[0]"
    jpeg_in_png = encoded(tile, "JPEG")  # declared as PNG, is a JPEG: decoded by content, allowed
    assert _image(stack, jpeg_in_png).status_code == 200
    assert stack.ready()


def test_pixel_total_and_image_count_limits_are_413_naming_images(stack: Stack) -> None:
    header = png_header_only(3900, 3900)  # 15.2 MP: under the per-image limit, 5 of them are not
    files = [("images", (f"{i}.png", header, "image/png")) for i in range(5)]
    started = time.monotonic()
    response = httpx.post(f"{stack.url}/score/image", params={"model": IMAGE_MODEL}, files=files, timeout=30)
    refused(response, 413, "images")
    assert "pixels together" in response.json()["error"]["message"] and time.monotonic() - started < 5
    tiny = png(Image.new("RGB", (8, 8)))
    for count, status in ((32, 200), (33, 413), (50, 413)):
        files = [("images", (f"{i}.png", tiny, "image/png")) for i in range(count)]
        response = httpx.post(
            f"{stack.url}/score/image", params={"model": IMAGE_MODEL, "map": "none"}, files=files, timeout=60
        )
        assert response.status_code == status, (count, response.text)
        if status == 413:
            assert response.json()["error"]["field"] == "images"
            assert "more than 32 images" in response.json()["error"]["message"]
        else:
            assert len(response.json()["results"]) == 32


# -- model names ------------------------------------------------------------------------------------
TRICKS = ["..", "../cardio-usflow", "a/b", "/etc/passwd", "%2e%2e", "%2e%2e%2fetc"]
TRICKS += ["x\x00y", "C:\\models", ".hidden", "Upper", "a" * 65]


def test_model_names_with_path_tricks_are_422_naming_model(stack: Stack) -> None:
    for name in TRICKS:
        refused(tabular(stack, {"model": name, "rows": [GOOD]}), 422, "model")
        response = httpx.post(
            f"{stack.url}/score/image",
            params={"model": name},
            content=b"x",
            headers={"content-type": "image/png"},
        )
        refused(response, 422, "model")
    for raw in ("%2e%2e", "a%00b", "..%5c..", "%2fetc%2fpasswd", "UPPER", "..."):
        response = httpx.get(f"{stack.url}/models/{raw}")
        assert response.status_code in (404, 422), (raw, response.text)
        if response.status_code == 422:
            assert response.json()["error"]["field"] == "model"
    for raw in ("..%2F..%2Fetc", "%2e%2e/%2e%2e/etc"):  # decoded to a path with slashes: no route
        assert httpx.get(f"{stack.url}/models/{raw}").status_code == 404
    assert stack.ready()


# -- OpenAPI states the limits ----------------------------------------------------------------------
def test_openapi_states_the_limits_the_server_enforces(stack: Stack) -> None:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    limits = spec["x-limits"]
    assert limits["max_image_pixels"] == 16_000_000 and limits["max_request_pixels"] == 64_000_000
    assert limits["max_images"] == 32 and limits["max_body_bytes"] == 20 * 1024 * 1024
    body = spec["paths"]["/score/tabular"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["model"]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    assert body["properties"]["rows"]["x-features-per-model"] == {TABULAR_MODEL: 21}
    image_model = next(
        p for p in spec["paths"]["/score/image"]["post"]["parameters"] if p["name"] == "model"
    )
    assert image_model["schema"]["pattern"] == "^[a-z0-9][a-z0-9._-]{0,63}$"
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    documented = set(spec["paths"]["/score/tabular"]["post"]["responses"])
    assert {"413", "415", "422", "429", "503", "504"} <= documented
    assert "16000000 pixels per image" in spec["info"]["description"]


# -- metrics tell the truth -------------------------------------------------------------------------
def _requests_by_status(text: str) -> Counter:
    counts: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("usfad_requests_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] += float(line.rsplit(" ", 1)[1])
    return counts


def test_metrics_counters_by_status_equal_the_clients_counts(stack: Stack) -> None:
    _, rows = cardio_rows()
    requests = [
        ("POST", "/score/tabular", {"json": {"model": TABULAR_MODEL, "rows": [row]}}) for row in rows.tolist()
    ]
    requests += [("POST", "/score/tabular", {"json": {"model": TABULAR_MODEL, "rows": [[1.0]]}})] * 17
    requests += [("POST", "/score/tabular", {"json": {"model": "no-such-model", "rows": [GOOD]}})] * 9
    plain = {"content": b"{}", "headers": {"content-type": "text/plain"}}
    requests += [("POST", "/score/tabular", plain)] * 5
    requests += [("POST", "/score/image", {"params": {"model": IMAGE_MODEL}, "content": b"GIF89a"})] * 4
    before = _requests_by_status(httpx.get(f"{stack.url}/metrics").text)
    outcomes = load(stack.url, requests, concurrency=16)
    after = _requests_by_status(httpx.get(f"{stack.url}/metrics").text)
    client = Counter(str(outcome.status) for outcome in outcomes)
    assert client == Counter({"200": len(rows), "422": 17, "404": 9, "415": 9})
    assert {status: after[status] - before[status] for status in client} == dict(client)
    assert sum(after.values()) - sum(before.values()) == len(requests)


# -- schemathesis -------------------------------------------------------------------------------------
FUZZ_EXAMPLES = {"/score/tabular": 200, "/score/image": 200, "/models/{name}": 120}


def _with_real_model(case, path: str):
    """Half of the positive cases name a served model, so that the checks behind the name run too."""
    if path == "/score/tabular" and isinstance(case.body, dict) and len(str(case.body)) % 2 == 0:
        case.body["model"] = TABULAR_MODEL
    elif path == "/score/image" and isinstance(case.query, dict) and len(str(case.query)) % 2 == 0:
        case.query["model"] = IMAGE_MODEL
    return case


def _asked_for_a_short_deadline(case) -> bool:
    """Whether the case set ``timeout_s`` to at most 1 s (schemathesis tries 5e-324, the schema's edge)."""
    for container in (case.query, case.body):
        if isinstance(container, dict):
            value = container.get("timeout_s")
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 1.0:
                return True
    return False


def test_schemathesis_fuzzing_of_every_endpoint_gives_no_5xx(stack: Stack) -> None:
    """Positive and negative cases generated from the served OpenAPI schema, ≥ 1,000 in all."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    statuses: Counter = Counter()
    per_operation: Counter = Counter()
    server_errors: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/score/tabular", "/score/image", "/models/{name}", "/metrics"}
    session = requests.Session()  # keep-alive: the time goes to the server, not to new connections

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.POSITIVE:
                strategy = strategy.map(lambda case, path=operation.path: _with_real_model(case, path))

            @settings(
                max_examples=FUZZ_EXAMPLES.get(operation.path, 5),
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def fuzz(case) -> None:
                try:
                    response = case.call(base_url=stack.url, session=session, timeout=30)
                except Exception as error:  # noqa: BLE001 - a dropped connection counts as a failure
                    server_errors.append(f"{case.operation.label}: client error {error!r}")
                    return
                statuses[response.status_code] += 1
                per_operation[case.operation.label] += 1
                if response.status_code == 504 and _asked_for_a_short_deadline(case):
                    return  # the documented answer to a deadline the service could not meet
                if response.status_code >= 500:
                    label = case.operation.label
                    server_errors.append(f"{label}: {response.status_code} {response.text[:200]}")

            try:
                fuzz()
            except Unsatisfiable:  # no parameters to break (e.g. GET /metrics): nothing negative exists
                assert mode is GenerationMode.NEGATIVE, operation.label
    session.close()
    assert server_errors == [], server_errors[:5]
    assert sum(statuses.values()) >= 1000, (statuses, per_operation)
    assert statuses[200] >= 10 and statuses[422] >= 200, statuses  # the checks behind the name ran
    assert stack.ready()
