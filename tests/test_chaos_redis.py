"""Chaos suite, Redis: SIGKILLed and restarted under load, on its own port with the append-only file.

The API and the worker are never restarted: readiness must fall and come back by itself,
requests during the outage get a fast 503 with ``Retry-After``, and no request hangs past
its deadline.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.chaos_support import Outcome, RedisServer, load, service_stack
from tests.service_support import TABULAR_MODEL, cardio_rows, wait_until

pytestmark = pytest.mark.timeout(300)
DEADLINE_S = 8.0
SETTINGS = {"USFAD_REQUEST_TIMEOUT_S": "8", "USFAD_RECLAIM_IDLE_S": "2", "USFAD_RECLAIM_INTERVAL_S": "1"}


def _request(row: list[float]) -> tuple[str, str, dict]:
    return ("POST", "/score/tabular", {"json": {"model": TABULAR_MODEL, "rows": [row]}})


def _steady_load(url: str, rows: list, stop: threading.Event, outcomes: list[Outcome]) -> None:
    """Rounds of 16 requests at concurrency 8 until ``stop`` (bounded: 300 rounds)."""
    for round_index in range(300):
        if stop.is_set():
            return
        batch = [_request(rows[(round_index + i) % len(rows)]) for i in range(16)]
        outcomes.extend(load(url, batch, concurrency=8, timeout_s=DEADLINE_S + 10))


def test_redis_sigkilled_and_restarted_under_load(tmp_path) -> None:
    _, rows = cardio_rows()
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with service_stack(tmp_path, workers=1, common=SETTINGS, url_of_redis=server.url) as stack:
            processes = [stack.api, *stack.workers]
            stop, outcomes = threading.Event(), []
            loader = threading.Thread(target=_steady_load, args=(stack.url, rows.tolist(), stop, outcomes))
            loader.start()
            time.sleep(2.0)
            server.kill()
            killed_at = time.monotonic()
            probes = []
            for _ in range(60):  # bounded: at least 3 s and 5 probes during the outage, at most 60 probes
                if len(probes) >= 5 and time.monotonic() - killed_at >= 3.0:
                    break
                started = time.monotonic()
                _, path, kwargs = _request(rows[0].tolist())
                response = httpx.post(f"{stack.url}{path}", timeout=10, **kwargs)
                seconds = time.monotonic() - started
                probes.append((response.status_code, seconds, response.headers.get("retry-after")))
                time.sleep(0.1)
            assert httpx.get(f"{stack.url}/health/ready", timeout=5).status_code == 503
            server.start()  # same port, same directory: the append-only file is replayed
            restarted_at = time.monotonic()
            wait_until(stack.ready, 30, "readiness after the Redis restart")
            recovered_s = time.monotonic() - restarted_at
            time.sleep(2.0)  # load after the recovery
            stop.set()
            loader.join(timeout=60)
            after = load(stack.url, [_request(row) for row in rows.tolist()], concurrency=8)
            assert all(process.process.poll() is None for process in processes)  # nothing was restarted

        assert len(probes) >= 5 and all(status == 503 and seconds < 1.0 and retry == "1"
                                         for status, seconds, retry in probes), probes
        statuses = [outcome.status for outcome in outcomes]
        assert set(statuses) <= {200, 503, 504}, {s: statuses.count(s) for s in set(statuses)}
        assert statuses.count(200) >= 32 and statuses.count(503) >= 1  # load before and after the outage
        assert max(outcome.seconds for outcome in outcomes) < DEADLINE_S + 2  # nothing hung
        assert [outcome.status for outcome in after] == [200] * len(rows)
        assert recovered_s < 15
    finally:
        server.stop()
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    slowest = max(probe[1] for probe in probes)
    print(f"redis restart: ready {recovered_s:.2f} s after it; load {counts}; slowest probe {slowest:.3f} s")
