"""Optional bearer tokens (``USFAD_API_TOKEN``, comma-separated for rotation; ``USFAD_METRICS_TOKEN``).

Through the real ``python -m service serve`` process (embedded mode) and real HTTP: every
endpoint but the two health checks answers 401 with ``WWW-Authenticate`` without a valid
token, each rotated token works, the metrics token opens only ``/metrics``, and no token
ever reaches the log.
"""

from __future__ import annotations

import httpx
import pytest

from tests.service_support import (
    TABULAR_MODEL,
    ServiceProcess,
    metric_value,
    model_dir,
)

pytestmark = pytest.mark.timeout(180)
TOKENS = ("rotating-old-7f3a9c", "rotating-new-2b8e41")
METRICS_TOKEN = "prometheus-only-5d2c"
ROW = {"model": TABULAR_MODEL, "rows": [[1.0] * 21]}


@pytest.fixture(scope="module")
def guarded(serve_embedded) -> tuple[str, ServiceProcess]:
    tokens = f" {TOKENS[0]}, {TOKENS[1]} "
    return serve_embedded(model_dir(), "service", USFAD_API_TOKEN=tokens, USFAD_METRICS_TOKEN=METRICS_TOKEN)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


GUARDED = [
    ("POST", "/score/tabular", {"json": ROW}),
    ("POST", "/score/image", {"params": {"model": "x"}, "content": b"x"}),
    ("GET", "/models", {}),
    ("GET", f"/models/{TABULAR_MODEL}", {}),
    ("GET", "/metrics", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/docs", {}),
]


def test_every_endpoint_but_health_needs_a_token(guarded) -> None:
    url, _ = guarded
    for path in ("/health/live", "/health/ready"):
        assert httpx.get(f"{url}{path}").status_code == 200
    for method, path, kwargs in GUARDED:
        for headers, error in (({}, False), (bearer("wrong"), True), ({"Authorization": "Basic eDp5"}, True)):
            response = httpx.request(method, f"{url}{path}", headers=headers, **kwargs)
            assert response.status_code == 401, (path, headers, response.text)
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith('Bearer realm="usfad"') and ('invalid_token' in challenge) == error
            assert response.json()["error"]["field"] == "authorization"


def test_each_rotated_token_works_and_the_metrics_token_opens_only_metrics(guarded) -> None:
    url, _ = guarded
    for token in TOKENS:
        response = httpx.post(f"{url}/score/tabular", json=ROW, headers=bearer(token))
        assert response.status_code == 200, response.text
        assert httpx.get(f"{url}/models", headers=bearer(token)).status_code == 200
        assert httpx.get(f"{url}/metrics", headers=bearer(token)).status_code == 200
    assert httpx.post(f"{url}/score/tabular", json=ROW, headers=bearer(METRICS_TOKEN)).status_code == 401
    metrics = httpx.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert metric_value(metrics.text, "usfad_requests_total", endpoint="/score/tabular", status="401") >= 3
    spec = httpx.get(f"{url}/openapi.json", headers=bearer(TOKENS[1])).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["paths"]["/score/tabular"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/health/ready"]["get"]


def test_no_token_reaches_the_log_or_the_metrics(guarded) -> None:
    url, process = guarded
    httpx.post(f"{url}/score/tabular", json={"model": "Bad..Name", "rows": []}, headers=bearer(TOKENS[0]))
    httpx.get(f"{url}/models", headers=bearer("guess-" + TOKENS[0]))
    text = process.log() + httpx.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN)).text
    for secret in (*TOKENS, METRICS_TOKEN):
        assert secret not in text
