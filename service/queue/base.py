"""The work queue interface shared by the Redis Streams queue and the in-process queue.

The API ``enqueue_async``s jobs and ``wait_async``s for results from its event loop; workers
``read`` batches and ``finish`` them (publish the results, then acknowledge). Both
implementations give the same at-least-once semantics, so the embedded mode and the
distributed mode run the very same batching worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import CodecError, QueueUnavailable
from service.queue import codec


@dataclass(frozen=True)
class Job:
    """One scoring request: a validated input batch for one model, with its deadline."""

    request_id: str
    model: str
    version: str | None
    deadline: float  # unix seconds; work still queued after it is dropped before compute
    enqueued: float  # unix seconds
    inputs: np.ndarray
    reply_to: str | None = None  # the API process's reply channel (Redis); None: the reply list
    maps: bool = True  # whether the answer needs the anomaly maps (``map=none``: the worker drops them)

    def to_bytes(self, reply_to: str | None = None) -> bytes:
        """Wire format (see ``service.queue.codec``); ``reply_to``, if given, replaces the job's channel."""
        fields = {
            "request_id": self.request_id,
            "model": self.model,
            "version": self.version,
            "deadline": self.deadline,
            "enqueued": self.enqueued,
            "reply_to": self.reply_to if reply_to is None else reply_to,
            "maps": self.maps,
        }
        return codec.encode(fields, {"inputs": self.inputs})

    @classmethod
    def from_bytes(cls, message: bytes) -> Job:
        """Inverse of ``to_bytes``; ``CodecError`` when malformed."""
        fields, arrays = codec.decode(message)
        try:
            return cls(
                request_id=str(fields["request_id"]),
                model=str(fields["model"]),
                version=fields.get("version"),
                deadline=float(fields["deadline"]),
                enqueued=float(fields["enqueued"]),
                inputs=arrays["inputs"],
                reply_to=fields.get("reply_to"),
                maps=bool(fields.get("maps", True)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CodecError(f"malformed job ({error})") from error


@dataclass(frozen=True)
class Delivery:
    """A job handed to a worker: ``entry_id`` to ack, ``deliveries`` so far (1 on first read).

    ``job`` is ``None`` when the entry could not be decoded (it goes to the dead-letter stream);
    ``request_id`` is then whatever the entry names, possibly ``""``.
    """

    entry_id: str
    model: str
    request_id: str
    deliveries: int
    job: Job | None


@dataclass
class Result:
    """A worker's answer to one job; ``status`` is the HTTP status the API returns."""

    request_id: str
    status: int
    error: str | None = None
    version: str | None = None
    threshold: float | None = None
    worker: str | None = None
    queue_wait_s: float = 0.0
    compute_s: float = 0.0
    batch_rows: int = 0
    calibration_n: int | None = None  # calibration scores behind arrays["p_value"] (None: uncalibrated)
    default_fpr: float | None = None  # the bundle's default false-alarm rate
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    reply_to: str | None = field(default=None, repr=False)  # where to send it; not part of the wire format

    def to_bytes(self) -> bytes:
        """Wire format (see ``service.queue.codec``)."""
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "status": self.status,
            "error": self.error,
            "version": self.version,
            "threshold": self.threshold,
            "worker": self.worker,
            "queue_wait_s": self.queue_wait_s,
            "compute_s": self.compute_s,
            "batch_rows": self.batch_rows,
            "calibration_n": self.calibration_n,
            "default_fpr": self.default_fpr,
        }
        return codec.encode(fields, self.arrays)

    @classmethod
    def from_bytes(cls, message: bytes) -> Result:
        """Inverse of ``to_bytes``."""
        fields, arrays = codec.decode(message)
        return cls(**fields, arrays=arrays)


class WorkQueue(Protocol):
    """What the API and the batching worker need from a queue (Redis Streams or in-process)."""

    def enqueue(self, job: Job, max_depth: int) -> int:
        """Add ``job`` to its model's queue; returns the depth. ``QueueFull`` / ``QueueUnavailable``."""

    def depth(self, model: str) -> int:
        """Entries of ``model`` not yet acknowledged (queued plus in progress)."""

    def read(self, consumer: str, models: list[str], count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` new entries per model, waiting up to ``block_s`` for the first."""

    def reclaim(self, consumer: str, models: list[str], min_idle_s: float, count: int) -> list[Delivery]:
        """Take over entries another consumer has held unacknowledged for ``min_idle_s``."""

    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge and drop finished entries (only after their results are published)."""

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Record ``delivery`` on the dead-letter stream (the caller publishes an error and acks)."""

    def publish(self, result: Result, ttl_s: float) -> bool:
        """Store ``result`` under its request id unless one is there already (idempotent)."""

    def publish_many(self, results: list[Result], ttl_s: float) -> None:
        """``publish`` each result, in one round trip where the backend allows."""

    def finish(self, done: list[tuple[Delivery, Result | None]], ttl_s: float) -> None:
        """Publish each pair's result (if any), then acknowledge its entry; one round trip where possible."""

    def has_result(self, request_id: str) -> bool:
        """Whether a result for ``request_id`` was published (duplicates are skipped)."""

    def answered(self, request_ids: list[str]) -> set[str]:
        """The subset of ``request_ids`` that already have a result (one round trip)."""

    def wait(self, request_id: str, timeout_s: float) -> Result | None:
        """Block until the result of ``request_id`` arrives or ``timeout_s`` passes."""

    async def start(self) -> None:
        """Prepare the API's asyncio side (called once the event loop runs)."""

    async def close(self) -> None:
        """Release the API's asyncio side."""

    async def enqueue_async(self, job: Job, max_depth: int) -> int:
        """``enqueue`` from the event loop; follow with ``wait_async`` for the same request id."""

    async def wait_async(self, request_id: str, timeout_s: float) -> Result | None:
        """Await the result of a job sent with ``enqueue_async``; ``None`` after ``timeout_s``."""

    def heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        """Announce a live worker and the models it has loaded."""

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's heartbeat (clean shutdown)."""

    def workers(self, max_age_s: float) -> list[dict[str, Any]]:
        """Heartbeats younger than ``max_age_s``."""

    def ping(self) -> bool:
        """Whether the backend answers."""


async def await_or_none(future: asyncio.Future[Result], timeout_s: float) -> Result | None:
    """``await future``, or ``None`` once ``timeout_s`` passed.

    A timer handle that resolves the future with ``None``, rather than ``asyncio.wait_for``,
    which costs a timeout context and extra callbacks per request (py-spy: 7% of the API's CPU).
    """
    loop = asyncio.get_running_loop()
    timer = loop.call_later(max(timeout_s, 0.0), _expire, future)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Result | None]) -> None:
    if not future.done():
        future.set_result(None)


def serving_workers(queue: WorkQueue, max_age_s: float) -> dict[str, list[dict[str, str]]]:
    """Per model, the live workers that have it loaded: ``{"worker", "version", "device"}`` each.

    From the heartbeats younger than ``max_age_s``; empty when the backend does not answer.
    """
    serving: dict[str, list[dict[str, str]]] = {}
    try:
        workers = queue.workers(max_age_s)
    except QueueUnavailable:
        return serving
    for beat in workers:
        for name, version in beat.get("models", {}).items():
            serving.setdefault(name, []).append(
                {"worker": beat["worker"], "version": version, "device": beat.get("device", "")}
            )
    return serving
