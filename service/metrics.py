"""Prometheus metrics of the API and the workers (names and labels are listed in the README).

Several API processes (``--api-workers N``) share one port, so one scrape reaches one of them.
They run in prometheus_client's multiprocess mode: ``shared_metrics_dir`` gives the processes a
``PROMETHEUS_MULTIPROC_DIR`` (created before uvicorn spawns them, removed when it stops), each
process writes its values there, and ``scrape`` sums them over all processes: counters and
histograms add up, ``usfad_in_flight_requests`` sums the live processes and
``usfad_queue_depth`` is the most recent value set.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    """True when this process records its metrics in a shared ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROC_VARIABLE))


@contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the API processes spawned inside this block.

    An existing ``$PROMETHEUS_MULTIPROC_DIR`` is used (its stale ``*.db`` files are removed
    first, as prometheus_client requires) and kept; otherwise a temporary one is made and
    removed at the end. Must be entered before any child process imports prometheus_client.
    """
    given = os.environ.get(MULTIPROC_VARIABLE)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix=f"usfad-metrics-{os.getpid()}-"))
        os.environ[MULTIPROC_VARIABLE] = str(path)
    try:
        yield path
    finally:
        if not given:
            os.environ.pop(MULTIPROC_VARIABLE, None)
            shutil.rmtree(path, ignore_errors=True)


def scrape(registry: CollectorRegistry) -> bytes:
    """Prometheus text of ``registry``, or of every process sharing the multiprocess directory."""
    if not multiprocess_mode():
        return generate_latest(registry)
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return generate_latest(combined)


def process_exited() -> None:
    """Drop this process's live gauges from the shared directory (multiprocess mode only)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class BoundChildren:
    """``metric.labels(*values)``, bound once per label values and reused.

    ``labels()`` checks and joins the values on every call (a few µs, several times per
    request); the callers' label values are bounded (paths, validated model names, statuses).
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class ApiMetrics:
    """What the API process records: requests, end-to-end latency, queue depth, in flight."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "usfad_requests",
            "Requests by endpoint, model and HTTP status",
            ["endpoint", "model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "usfad_request_latency_seconds",
            "End-to-end latency inside the API (validation, queue, compute, response)",
            ["endpoint", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "usfad_queue_depth",
            "Requests queued or in progress per model",
            ["model"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.in_flight = Gauge(
            "usfad_in_flight_requests",
            "Requests the API is handling now",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.p_value_share = Gauge(
            "usfad_p_value_share",
            "Share of the last 1000 answered rows/images with p_value <= level (drift alarm)",
            ["model", "level"],
            registry=registry,
            multiprocess_mode="mostrecent",  # each API process has its own window
        )


class WorkerMetrics:
    """What a worker records: queue wait, compute, batch size, reclaims, dead letters, loads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_wait = Histogram(
            "usfad_queue_wait_seconds",
            "Time from enqueue to the start of compute",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute = Histogram(
            "usfad_compute_seconds",
            "ONNX Runtime time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "usfad_batch_size",
            "Rows or images per computed batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.dead_lettered = Counter(
            "usfad_dead_lettered", "Entries moved to the dead-letter stream", ["model"], registry=registry
        )
        self.reclaimed = Counter(
            "usfad_reclaimed",
            "Entries reclaimed from workers that stopped answering",
            ["model"],
            registry=registry,
        )
        self.expired = Counter(
            "usfad_expired",
            "Requests dropped before compute because their deadline passed",
            ["model"],
            registry=registry,
        )
        self.overflowed = Counter(
            "usfad_overflowed",
            "Inputs whose score (or anomaly map) was not finite: answered is_anomaly with a reason",
            ["model"],
            registry=registry,
        )
        self.load_failures = Counter(
            "usfad_model_load_failures",
            "Bundles that failed to load (the previous version keeps serving)",
            ["model"],
            registry=registry,
        )
        self.models_loaded = Gauge(
            "usfad_model_loaded",
            "1 for each model version this worker serves",
            ["model", "version"],
            registry=registry,
        )
        self.device = Gauge(
            "usfad_worker_device",
            "1, labelled with the worker's device and ONNX Runtime providers",
            ["worker", "device", "providers"],
            registry=registry,
        )
