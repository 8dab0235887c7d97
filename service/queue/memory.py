"""In-process work queue for the embedded mode (``usfad serve`` without Redis).

Same semantics as ``RedisStreamQueue`` (depth limit, pending entries, reclaim, dead letters,
first-result-wins), so the embedded API and worker run exactly the code of the distributed mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import QueueFull
from service.queue.base import Delivery, Job, Result, await_or_none


@dataclass
class _Pending:
    delivery: Delivery
    consumer: str
    delivered_at: float


class InProcessQueue:
    """``WorkQueue`` backed by deques and a condition variable; thread-safe."""

    def __init__(self) -> None:
        # One condition wakes workers when jobs arrive; each waiting request has its own Event,
        # so a published result wakes one API thread, not all of them.
        self._lock = threading.Condition()
        self._events: dict[str, threading.Event] = {}
        self._futures: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Result]]] = {}
        self._queues: dict[str, deque[tuple[str, Job]]] = {}
        self._waiting: Counter[str] = Counter()  # models some ``read`` is blocked on
        self._pending: dict[str, _Pending] = {}
        self._results: dict[str, tuple[Result, float]] = {}
        self._expiries: deque[tuple[float, str]] = deque()  # (expiry, request id), in storing order
        # Called on the event loop after each ``enqueue_async`` (the embedded mode's inline batcher).
        self.on_enqueue: Callable[[Job], None] | None = None
        self._heartbeats: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.dead: list[dict[str, Any]] = []

    def enqueue(self, job: Job, max_depth: int) -> int:
        """Append ``job``; ``QueueFull`` when ``max_depth`` entries are queued or in progress."""
        with self._lock:
            depth = self._depth_locked(job.model)
            if depth >= max_depth:
                raise QueueFull(f"queue of model {job.model!r} holds {max_depth} requests already")
            self._queues.setdefault(job.model, deque()).append((f"{next(self._ids)}-0", job))
            if self._waiting[job.model]:  # wake a reader only when it waits for this model
                self._lock.notify_all()
            return depth + 1

    def _depth_locked(self, model: str) -> int:
        queued = len(self._queues.get(model, ()))
        return queued + sum(1 for item in self._pending.values() if item.delivery.model == model)

    def depth(self, model: str) -> int:
        """Queued plus unacknowledged entries of ``model``."""
        with self._lock:
            return self._depth_locked(model)

    def read(self, consumer: str, models: list[str], count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` entries per model, waiting up to ``block_s`` for the first."""
        with self._lock:
            if block_s > 0 and not any(self._queues.get(model) for model in models):
                self._waiting.update(models)
                try:
                    self._lock.wait_for(
                        lambda: any(self._queues.get(model) for model in models), timeout=block_s
                    )
                finally:
                    self._waiting.subtract(models)
            now = time.time()
            deliveries = []
            for model in models:
                queue = self._queues.get(model)
                for _ in range(min(count, len(queue or ()))):
                    entry_id, job = queue.popleft()
                    delivery = Delivery(entry_id, model, job.request_id, 1, job)
                    self._pending[entry_id] = _Pending(delivery, consumer, now)
                    deliveries.append(delivery)
            return deliveries

    def reclaim(self, consumer: str, models: list[str], min_idle_s: float, count: int) -> list[Delivery]:
        """Take over entries idle for ``min_idle_s``; each takeover counts as a delivery."""
        with self._lock:
            now = time.time()
            taken = []
            for entry_id, item in list(self._pending.items()):
                if (
                    item.delivery.model in models
                    and now - item.delivered_at >= min_idle_s
                    and len(taken) < count
                ):
                    old = item.delivery
                    delivery = Delivery(entry_id, old.model, old.request_id, old.deliveries + 1, old.job)
                    self._pending[entry_id] = _Pending(delivery, consumer, now)
                    taken.append(delivery)
            return taken

    def ack(self, deliveries: list[Delivery]) -> None:
        """Forget finished entries."""
        with self._lock:
            for delivery in deliveries:
                self._pending.pop(delivery.entry_id, None)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep a record of the dead-lettered entry."""
        with self._lock:
            self.dead.append(
                {
                    "request_id": delivery.request_id,
                    "model": delivery.model,
                    "reason": reason,
                    "time": time.time(),
                }
            )

    def publish(self, result: Result, ttl_s: float) -> bool:
        """Store the first result for a request id; wake its waiter."""
        wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], Result]]] = {}
        stored = self._store(result, ttl_s, wakeups)
        _wake(wakeups)
        return stored

    def _store(
        self,
        result: Result,
        ttl_s: float,
        wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], Result]]],
    ) -> bool:
        """``publish`` without waking event loops: their futures are added to ``wakeups``."""
        with self._lock:
            now = time.time()
            expiries = self._expiries
            while expiries and expiries[0][0] <= now:  # drop expired results, oldest first
                _, request_id = expiries.popleft()
                stored = self._results.get(request_id)
                if stored is not None and stored[1] <= now:
                    del self._results[request_id]
            existing = self._results.get(result.request_id)
            if existing is not None and existing[1] > now:
                return False
            self._results[result.request_id] = (result, now + ttl_s)
            expiries.append((now + ttl_s, result.request_id))
            event = self._events.pop(result.request_id, None)
            waiter = self._futures.pop(result.request_id, None)
        if event is not None:
            event.set()
        if waiter is not None:  # an API request awaiting in the event loop (another thread)
            loop, future = waiter
            wakeups.setdefault(loop, []).append((future, result))
        return True

    def publish_many(self, results: list[Result], ttl_s: float) -> None:
        """``publish`` each result; each event loop is woken once for all of them."""
        wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], Result]]] = {}
        for result in results:
            self._store(result, ttl_s, wakeups)
        _wake(wakeups)

    def finish(self, done: list[tuple[Delivery, Result | None]], ttl_s: float) -> None:
        """Publish each result, then acknowledge its entry; each event loop is woken once per call."""
        wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], Result]]] = {}
        for _, result in done:
            if result is not None:
                self._store(result, ttl_s, wakeups)
        self.ack([delivery for delivery, _ in done])
        _wake(wakeups)

    async def start(self) -> None:
        """Nothing to prepare: results are handed over in process."""

    async def close(self) -> None:
        """Nothing to release."""

    async def enqueue_async(self, job: Job, max_depth: int) -> int:
        """``enqueue`` (it never blocks: one short lock), then tell ``on_enqueue``."""
        depth = self.enqueue(job, max_depth)
        if self.on_enqueue is not None:
            self.on_enqueue(job)
        return depth

    async def wait_async(self, request_id: str, timeout_s: float) -> Result | None:
        """Await the result without a thread: the worker thread resolves an ``asyncio.Future``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        with self._lock:
            item = self._results.get(request_id)
            if item is not None:
                return item[0]
            self._futures[request_id] = (loop, future)
        try:
            result = await await_or_none(future, timeout_s)
        finally:
            with self._lock:
                self._futures.pop(request_id, None)
        if result is None:
            with self._lock:
                item = self._results.get(request_id)
                return item[0] if item is not None else None
        return result

    def answered(self, request_ids: list[str]) -> set[str]:
        """The ids among ``request_ids`` with an unexpired result."""
        return {request_id for request_id in request_ids if self.has_result(request_id)}

    def has_result(self, request_id: str) -> bool:
        """Whether an unexpired result exists."""
        with self._lock:
            item = self._results.get(request_id)
            return item is not None and item[1] > time.time()

    def wait(self, request_id: str, timeout_s: float) -> Result | None:
        """Block until the result arrives or ``timeout_s`` passes."""
        with self._lock:
            item = self._results.get(request_id)
            if item is not None:
                return item[0]
            event = self._events.setdefault(request_id, threading.Event())
        event.wait(max(timeout_s, 0.0))
        with self._lock:
            self._events.pop(request_id, None)
            item = self._results.get(request_id)
            return item[0] if item is not None else None

    def heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        """Record a live worker."""
        with self._lock:
            self._heartbeats[worker_id] = {**info, "seen": time.time()}

    def forget_worker(self, worker_id: str) -> None:
        """Drop a worker's heartbeat."""
        with self._lock:
            self._heartbeats.pop(worker_id, None)

    def workers(self, max_age_s: float) -> list[dict[str, Any]]:
        """Heartbeats seen within ``max_age_s``."""
        with self._lock:
            now = time.time()
            return [dict(beat) for beat in self._heartbeats.values() if now - beat["seen"] <= max_age_s]

    def ping(self) -> bool:
        """Always ``True``: the queue lives in this process."""
        return True


def _set_results(pairs: list[tuple[asyncio.Future[Result], Result]]) -> None:
    for future, result in pairs:
        if not future.done():
            future.set_result(result)


def _wake(wakeups: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Result], Result]]]) -> None:
    """One ``call_soon_threadsafe`` per event loop (one self-pipe write), not one per result.

    On the loop's own thread (the embedded inline batcher) the futures are resolved directly.
    """
    running = asyncio._get_running_loop()
    for loop, pairs in wakeups.items():
        if loop is running:
            _set_results(pairs)
            continue
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
            loop.call_soon_threadsafe(_set_results, pairs)
