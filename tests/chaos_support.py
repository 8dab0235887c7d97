"""Helpers of the chaos suite: service stacks, a private Redis, bounded concurrent load, RSS.

Every process is started here with its own PID and stopped by that PID (never by name);
every loop is bounded in count and time. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.service_support import (
    ServiceProcess,
    compose_process,
    delete_prefix,
    free_port,
    model_dir,
    redis_url,
    unique_prefix,
    wait_until,
)


@dataclass
class Stack:
    """An API and its workers, started with docker-compose's commands and environment."""

    url: str
    prefix: str
    redis_url: str
    api: ServiceProcess
    workers: list[ServiceProcess]
    worker_metrics: list[str]
    worker_ids: list[str]
    logs: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def ready(self, workers: int | None = None) -> bool:
        """Whether ``/health/ready`` is 200 (with ``workers`` live workers, when given)."""
        response = httpx.get(f"{self.url}/health/ready", timeout=2)
        if response.status_code != 200:
            return False
        return workers is None or response.json()["workers"] == workers

    def worker_metric_text(self) -> str:
        """The Prometheus text of every worker still running, concatenated."""
        texts = []
        for process, url in zip(self.workers, self.worker_metrics, strict=True):
            if process.process.poll() is None:
                texts.append(httpx.get(url, timeout=5).text)
        return "\n".join(texts)


@contextlib.contextmanager
def service_stack(
    logs: Path,
    workers: int = 1,
    common: dict[str, str] | None = None,
    api_env: dict[str, str] | None = None,
    worker_env: dict[str, str] | None = None,
    url_of_redis: str | None = None,
    models: Path | None = None,
    wait_ready: bool = True,
) -> Iterator[Stack]:
    """Start ``workers`` workers and one API on a fresh key prefix; stop them all (by PID) after."""
    logs.mkdir(parents=True, exist_ok=True)
    prefix, port = unique_prefix(), free_port()
    redis_at = url_of_redis or redis_url()
    shared = {
        "USFAD_REDIS_URL": redis_at,
        "USFAD_QUEUE_PREFIX": prefix,
        "USFAD_MODEL_DIR": str(models or model_dir()),
        "USFAD_RELOAD_INTERVAL_S": "1",
        **(common or {}),
    }
    processes: list[ServiceProcess] = []
    metrics, ids = [], []
    try:
        for index in range(workers):
            metrics_port = free_port()
            worker_id = f"chaos-worker-{index}"
            env = {**shared, "USFAD_METRICS_PORT": str(metrics_port), "USFAD_WORKER_ID": worker_id}
            env.update(worker_env or {})
            processes.append(compose_process("worker", env, logs / f"{worker_id}.log"))
            metrics.append(f"http://127.0.0.1:{metrics_port}/metrics")
            ids.append(worker_id)
        env = {**shared, "USFAD_HOST": "127.0.0.1", "USFAD_PORT": str(port), **(api_env or {})}
        api = compose_process("api", env, logs / "api.log")
        processes.append(api)
        stack = Stack(f"http://127.0.0.1:{port}", prefix, redis_at, api, processes[:-1], metrics, ids, logs)
        if wait_ready:
            wait_until(lambda: stack.ready(workers), 90, f"API ready with {workers} workers")
        else:
            live = f"{stack.url}/health/live"
            wait_until(lambda: httpx.get(live, timeout=2).status_code == 200, 60, "API live")
        yield stack
    finally:
        for process in processes:
            process.stop()
        with contextlib.suppress(redis.RedisError):
            if url_of_redis is None:
                delete_prefix(prefix)


class RedisServer:
    """A private ``redis-server`` on its own port with the append-only file on (stopped by PID)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart on the same port and data directory) and wait until it answers."""
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
        ]  # fmt: skip
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: bool(client.ping()), 20, f"redis-server on port {self.port}")
        client.close()

    def kill(self) -> None:
        """SIGKILL this Redis (by its PID) and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Outcome:
    """One client request: status (0 when the client itself failed), seconds, parsed body."""

    status: int
    seconds: float
    body: Any
    headers: dict[str, str]
    error: str | None = None


async def _send(client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        return Outcome(0, time.monotonic() - started, None, {}, f"{type(error).__name__}: {error}")
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Outcome(response.status_code, time.monotonic() - started, body, dict(response.headers))


def load(
    url: str,
    requests: list[tuple[str, str, dict[str, Any]]],
    concurrency: int,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[Outcome]:
    """Send every ``(method, path, httpx kwargs)`` with at most ``concurrency`` in flight; keep order.

    Bounded: ``len(requests)`` requests, each with the client timeout ``timeout_s``.
    """

    async def run() -> list[Outcome]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        gate = asyncio.Semaphore(concurrency)
        options = {"base_url": url, "timeout": timeout_s, "limits": limits, "headers": headers}
        async with httpx.AsyncClient(**options) as client:

            async def one(item: tuple[str, str, dict[str, Any]]) -> Outcome:
                async with gate:
                    return await _send(client, *item)

            return await asyncio.gather(*(one(item) for item in requests))

    return asyncio.run(run())


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def pending_of(client: redis.Redis, stream: str, consumer: str) -> int:
    """Entries of ``stream`` that ``consumer`` holds unacknowledged (``XPENDING … consumer``)."""
    try:
        held = client.xpending_range(stream, "workers", min="-", max="+", count=10_000, consumername=consumer)
        return len(held)
    except redis.ResponseError:
        return 0
