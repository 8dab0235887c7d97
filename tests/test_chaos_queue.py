"""Chaos suite, queue: a worker SIGKILLed under load, queue overflow, expired jobs.

Real Redis, real worker processes and real HTTP, started with docker-compose's commands and
environment at its defaults (reclaim idle 10 s, reclaim interval 2 s, deadline 30 s).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest
import redis

from service.bundles.bundle import load_bundle
from tests.chaos_support import load, pending_of, service_stack
from tests.service_support import (
    TABULAR_MODEL,
    cardio_rows,
    compose_process,
    free_port,
    metric_value,
    model_dir,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)
REQUESTS = 2000
CONCURRENCY = 32
DEADLINE_S = 30.0  # the default request deadline


def _kill_while_holding(client: redis.Redis, stream: str, worker_id: str, pid: int, found: dict) -> None:
    """Freeze the victim (SIGSTOP) until it holds unacknowledged entries, then SIGKILL it.

    Bounded: at most 400 tries in 40 s; a try that finds nothing held lets the victim run on.
    """
    time.sleep(1.0)  # let the load reach both workers
    deadline = time.monotonic() + 40
    for _ in range(400):
        if time.monotonic() > deadline:
            return
        os.kill(pid, signal.SIGSTOP)
        held = pending_of(client, stream, worker_id)
        if held > 0:
            os.kill(pid, signal.SIGKILL)
            found.update(held=held, at=time.monotonic())
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)


def test_a_worker_sigkilled_under_load_loses_duplicates_and_delays_nothing(tmp_path) -> None:
    _, rows = cardio_rows()
    expected = load_bundle(model_dir() / TABULAR_MODEL, device="cpu").run(rows).score
    indices = [index % len(rows) for index in range(REQUESTS)]
    bodies = [{"model": TABULAR_MODEL, "rows": [rows[i].tolist()]} for i in indices]
    requests = [("POST", "/score/tabular", {"json": body}) for body in bodies]
    with service_stack(tmp_path, workers=2) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        stream = f"{stack.prefix}:jobs:{TABULAR_MODEL}"
        victim, survivor = stack.workers
        found: dict = {}
        killer = threading.Thread(
            target=_kill_while_holding, args=(client, stream, stack.worker_ids[0], victim.pid, found)
        )
        killer.start()
        started = time.monotonic()
        outcomes = load(stack.url, requests, concurrency=CONCURRENCY, timeout_s=DEADLINE_S + 15)
        elapsed = time.monotonic() - started
        killer.join(timeout=60)
        assert found.get("held", 0) >= 1, "the victim never held unacknowledged entries"
        assert victim.process.wait(timeout=10) == -signal.SIGKILL

        statuses = [outcome.status for outcome in outcomes]
        assert statuses.count(200) == REQUESTS, {s: statuses.count(s) for s in set(statuses)}
        assert max(outcome.seconds for outcome in outcomes) < DEADLINE_S
        request_ids = [outcome.body["request_id"] for outcome in outcomes]
        assert len(set(request_ids)) == REQUESTS
        served = np.array([outcome.body["results"][0]["score"] for outcome in outcomes])
        np.testing.assert_allclose(served, expected[indices], rtol=1e-5)  # each got its own answer
        assert client.xlen(f"{stack.prefix}:dead") == 0
        assert client.xlen(stream) == 0  # every entry acknowledged and deleted
        reclaimed = metric_value(httpx.get(stack.worker_metrics[1]).text, "usfad_reclaimed_total")
        assert reclaimed >= found["held"]
        assert survivor.process.poll() is None
        client.close()
    print(f"worker kill: {REQUESTS} requests in {elapsed:.1f} s, {found['held']} held by the victim, "
          f"{reclaimed:.0f} reclaimed, slowest {max(o.seconds for o in outcomes):.1f} s")


def test_exactly_the_excess_gets_429_and_expired_jobs_are_never_computed(tmp_path) -> None:
    depth, sent = 20, 30
    body = {"model": TABULAR_MODEL, "rows": [[1.0] * 21], "timeout_s": 3}
    env = {"USFAD_MAX_QUEUE_DEPTH": str(depth)}
    with service_stack(tmp_path, workers=0, common=env, wait_ready=False) as stack:  # no worker yet
        outcomes = load(stack.url, [("POST", "/score/tabular", {"json": body})] * sent, concurrency=sent)
        full = [outcome for outcome in outcomes if outcome.status == 429]
        expired = [outcome for outcome in outcomes if outcome.status == 504]
        assert len(full) == sent - depth and len(expired) == depth, [o.status for o in outcomes]
        assert all(o.seconds < 1.5 and o.headers["retry-after"] == "1" for o in full)
        assert all(2.5 < o.seconds < 6 and "deadline" in o.body["error"]["message"] for o in expired)

        metrics_port = free_port()  # now a worker comes: it must drop the 20 expired jobs uncomputed
        env = {
            "USFAD_REDIS_URL": stack.redis_url,
            "USFAD_QUEUE_PREFIX": stack.prefix,
            "USFAD_MODEL_DIR": str(model_dir()),
            "USFAD_METRICS_PORT": str(metrics_port),
            "USFAD_WORKER_ID": "late-worker",
        }
        worker = compose_process("worker", env, tmp_path / "late-worker.log")
        try:
            client = redis.Redis.from_url(stack.redis_url)
            stream = f"{stack.prefix}:jobs:{TABULAR_MODEL}"
            wait_until(lambda: client.exists(stream) and client.xlen(stream) == 0, 60, "expired jobs dropped")
            text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert metric_value(text, "usfad_expired_total", model=TABULAR_MODEL) == depth
            assert metric_value(text, "usfad_batch_size_count", model=TABULAR_MODEL) == 0  # never computed
            client.close()
        finally:
            worker.stop()
