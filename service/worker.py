"""The batching worker: reads jobs in dynamic batches, scores them, publishes, then acknowledges.

One loop serves both modes (embedded: in-process queue, thread; distributed: Redis, process):

1. ``collect``: read up to ``max_batch`` rows, waiting at most ``max_delay`` after the first
   entry arrived for more (the dynamic batcher);
2. drop expired jobs (504), refuse undecodable ones (dead letter), skip already answered ones;
3. concatenate the rest per model, run ONNX Runtime once, split, publish each result;
4. acknowledge only after publishing (at-least-once); every ``reclaim_interval`` take over
   entries a dead worker left unacknowledged, dead-lettering those delivered too often.

In the embedded mode the worker thread collects the image models' jobs, and ``InlineBatcher``
runs the same ``process`` for the tabular models' jobs on the API's event loop (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import defaultdict
from typing import Any, Protocol

import numpy as np

from service.bundles.catalog import BundleCatalog
from service.errors import InputError, QueueUnavailable
from service.metrics import BoundChildren, WorkerMetrics
from service.queue.base import Delivery, Result, WorkQueue
from service.settings import Settings
from service.verdict import overflowed

LOG = logging.getLogger("usfad.worker")
HEAVY_MODULES = ("torch", "training", "anomalib")


def heavy_modules_loaded() -> list[str]:
    """Which of torch / training / anomalib this process has imported (should be none)."""
    return [name for name in HEAVY_MODULES if name in sys.modules]


class Bundles(Protocol):
    """What the worker needs of its bundles: a ``BundleCatalog`` or its ``LoadedView``."""

    def names(self) -> list[str]: ...

    def items(self) -> dict[str, Any]: ...

    def get(self, name: str) -> Any: ...


class BatchingWorker:
    """Consumes a ``WorkQueue`` with the models of a ``BundleCatalog``.

    ``kinds`` limits the models whose queues ``collect`` reads (``None``: all); ``reclaim``
    always covers every loaded model.
    """

    def __init__(
        self,
        queue: WorkQueue,
        catalog: Bundles | BundleCatalog,
        settings: Settings,
        metrics: WorkerMetrics,
        kinds: tuple[str, ...] | None = None,
    ) -> None:
        self.queue = queue
        self.catalog = catalog
        self.settings = settings
        self.metrics = metrics
        self.kinds = kinds
        self._compute_s = BoundChildren(metrics.compute)
        self._batch_size = BoundChildren(metrics.batch_size)
        self._queue_wait = BoundChildren(metrics.queue_wait)
        self.worker_id = settings.worker_id
        self._last_reclaim = time.monotonic()
        self._last_heartbeat = float("-inf")
        self._stop = threading.Event()

    # -- loop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self._stop.set()

    def run(self) -> None:
        """Serve until ``stop()``; Redis outages are waited out with a back-off."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.step()
                backoff = 0.1
            except QueueUnavailable as error:
                LOG.warning("queue unavailable, retrying in %.1fs: %s", backoff, error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # noqa: BLE001 - keep serving; unacknowledged entries get reclaimed
                LOG.exception("worker step failed, retrying in %.1fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        with contextlib.suppress(QueueUnavailable):
            self.queue.forget_worker(self.worker_id)

    def step(self) -> int:
        """One iteration: heartbeat, maybe reclaim, collect one batch and process it; returns jobs handled."""
        self.heartbeat()
        handled = 0
        if time.monotonic() - self._last_reclaim >= self.settings.reclaim_interval_s:
            self._last_reclaim = time.monotonic()
            handled += self.process(self.reclaim())
        handled += self.process(self.collect())
        return handled

    def heartbeat(self, force: bool = False) -> None:
        """Announce this worker, its device and its loaded model versions."""
        now = time.monotonic()
        if not force and now - self._last_heartbeat < self.settings.heartbeat_interval_s:
            return
        self._last_heartbeat = now
        bundles = self.catalog.items()
        providers = sorted({provider for bundle in bundles.values() for provider in bundle.providers})
        self.metrics.models_loaded.clear()
        for name, bundle in bundles.items():
            self.metrics.models_loaded.labels(name, bundle.version).set(1)
        device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
        self.metrics.device.clear()
        self.metrics.device.labels(self.worker_id, device, ",".join(providers) or "none").set(1)
        info: dict[str, Any] = {
            "worker": self.worker_id,
            "models": {name: bundle.version for name, bundle in bundles.items()},
            "device": device,
            "providers": providers,
            "heavy_modules": heavy_modules_loaded(),
        }
        self.queue.heartbeat(self.worker_id, info)

    # -- batching -----------------------------------------------------------------------------
    def collect(self, poll_s: float = 0.1) -> list[Delivery]:
        """Block for the first entries, then take what else is queued; never wait on an empty queue.

        Like Triton's dynamic batcher with queue delay 0: a read that returns one entry (light
        load) is computed at once. A read that returns several (a burst: more is known to be
        coming) is followed by non-blocking reads while they keep returning several, some
        model still has room below ``max_batch``, and ``max_delay`` has not passed. Under load,
        the entries that queue up while a batch computes form the next batch.
        """
        models = self.collected_models()
        if not models:
            time.sleep(poll_s)
            return []
        count = max(self.settings.policy(model).max_batch for model in models)
        deliveries = self.queue.read(self.worker_id, models, count, poll_s)
        if not deliveries:
            return []
        rows: dict[str, int] = defaultdict(int)
        for delivery in deliveries:
            rows[delivery.model] += _rows(delivery)
        close_at = time.monotonic() + min(self.settings.policy(model).max_delay_s for model in rows)
        last = deliveries
        while (
            len(last) > 1
            and time.monotonic() < close_at
            and all(rows[m] < self.settings.policy(m).max_batch for m in rows)
        ):
            last = self.queue.read(self.worker_id, models, count, 0.0)
            for delivery in last:
                rows[delivery.model] += _rows(delivery)
            deliveries.extend(last)
        return deliveries

    def collected_models(self) -> list[str]:
        """The models whose queues ``collect`` reads (those of ``kinds``)."""
        if self.kinds is None:
            return self.catalog.names()
        bundles = self.catalog.items()
        return sorted(name for name, bundle in bundles.items() if bundle.manifest.kind in self.kinds)

    def reclaim(self) -> list[Delivery]:
        """Entries idle past ``reclaim_idle_s``; those delivered too often are dead-lettered here."""
        taken = self.queue.reclaim(
            self.worker_id, self.catalog.names(), self.settings.reclaim_idle_s, count=256
        )
        alive = []
        for delivery in taken:
            self.metrics.reclaimed.labels(delivery.model).inc()
            if delivery.deliveries > self.settings.max_deliveries:
                self._dead_letter(
                    delivery, f"delivered {delivery.deliveries} times without being acknowledged"
                )
            else:
                alive.append(delivery)
        if taken:
            LOG.warning("reclaimed %d entries (%d dead-lettered)", len(taken), len(taken) - len(alive))
        return alive

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.queue.dead_letter(delivery, reason)
        self.metrics.dead_lettered.labels(delivery.model).inc()
        result = None
        if delivery.request_id:
            result = self._error(delivery, 500, f"request was dead-lettered: {reason}")
        self.queue.finish([(delivery, result)], self.settings.result_ttl_s)

    def _error(self, delivery: Delivery, status: int, message: str) -> Result:
        """An error result for ``delivery``, addressed to its API process."""
        reply_to = delivery.job.reply_to if delivery.job is not None else None
        return Result(delivery.request_id, status, message, worker=self.worker_id, reply_to=reply_to)

    # -- compute ------------------------------------------------------------------------------
    def process(self, deliveries: list[Delivery]) -> int:
        """Score ``deliveries`` (grouped per model), publish every result, then acknowledge."""
        by_model: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in deliveries:
            if delivery.job is None:
                self._dead_letter(delivery, "entry cannot be decoded")
            else:
                by_model[delivery.model].append(delivery)
        for model, group in by_model.items():
            self._process_model(model, group)
        return len(deliveries)

    def _process_model(self, model: str, group: list[Delivery]) -> None:
        now = time.time()
        runnable: list[Delivery] = []
        try:
            bundle = self.catalog.get(model)
        except LookupError:
            bundle = None
        # Only a redelivered (reclaimed) entry can have a result already: the finish script
        # stores a result and acknowledges its entry in one step. A first delivery of a
        # duplicate job is harmless too: ``SET NX`` keeps the first result.
        redelivered = [delivery.request_id for delivery in group if delivery.deliveries > 1]
        answered = self.queue.answered(redelivered) if redelivered else set()
        done: list[tuple[Delivery, Result | None]] = []  # answered without compute, finished together
        for delivery in group:
            job = delivery.job
            assert job is not None
            if job.request_id in answered:  # a duplicate (reclaimed after the result was written)
                done.append((delivery, None))
            elif job.deadline <= now:
                self.metrics.expired.labels(model).inc()
                done.append((delivery, self._error(delivery, 504, "deadline passed while queued")))
            elif bundle is None:
                message = f"model {model!r} is not loaded on this worker"
                done.append((delivery, self._error(delivery, 404, message)))
            elif job.version is not None and job.version != bundle.version:
                message = f"model {model!r} serves version {bundle.version!r}, not {job.version!r}"
                done.append((delivery, self._error(delivery, 404, message)))
            else:
                runnable.append(delivery)
        if done:
            self.queue.finish(done, self.settings.result_ttl_s)
        if bundle is None or not runnable:
            return
        policy = self.settings.policy(model)
        batch: list[Delivery] = []
        batch_rows = 0
        for delivery in runnable:
            if batch and batch_rows + _rows(delivery) > policy.max_batch:
                self._compute(bundle, batch)
                batch, batch_rows = [], 0
            batch.append(delivery)
            batch_rows += _rows(delivery)
        self._compute(bundle, batch)

    def _compute(self, bundle: Any, batch: list[Delivery]) -> None:
        jobs = [delivery.job for delivery in batch]
        started = time.time()
        try:
            # One check of the whole batch (not one per job); when it fails, the batch is split
            # below and each job is checked alone, so the error names that job's own input.
            joined = jobs[0].inputs if len(jobs) == 1 else np.concatenate([job.inputs for job in jobs])
            inputs = _checked_inputs(bundle, joined)
            outputs = bundle.run(inputs)
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors are not RuntimeError subclasses
            if len(batch) > 1:  # isolate the bad request: the others must still be answered
                for delivery in batch:
                    self._compute(bundle, [delivery])
                return
            status = error.status if isinstance(error, InputError) else 500
            failed = self._error(batch[0], status, str(error))
            self.queue.finish([(batch[0], failed)], self.settings.result_ttl_s)
            return
        p_arrays = bundle.p_values(outputs.score)  # empty for an uncalibrated bundle
        calibration = bundle.manifest.calibration
        compute_s = time.time() - started
        rows = inputs.shape[0]
        self._compute_s(bundle.name).observe(compute_s)
        self._batch_size(bundle.name).observe(rows)
        queue_wait = self._queue_wait(bundle.name)
        overflow = overflowed(outputs.score, outputs.anomaly_map).astype(np.uint8)
        if overflow.any():
            self.metrics.overflowed.labels(bundle.name).inc(int(overflow.sum()))
        offset = 0
        done: list[tuple[Delivery, Result | None]] = []
        for delivery, job in zip(batch, jobs, strict=True):
            count = job.inputs.shape[0]
            part = slice(offset, offset + count)
            offset += count
            arrays = {"score": outputs.score[part], "nll": outputs.nll[part], "overflow": overflow[part]}
            if outputs.anomaly_map is not None and job.maps:  # 96x128 floats per image: only when asked
                arrays["anomaly_map"] = outputs.anomaly_map[part]
            for name, values in p_arrays.items():
                arrays[name] = values[part]
            wait_s = max(0.0, started - job.enqueued)
            queue_wait.observe(wait_s)
            result = Result(
                job.request_id,
                200,
                version=bundle.version,
                threshold=bundle.manifest.threshold,
                worker=self.worker_id,
                queue_wait_s=wait_s,
                compute_s=compute_s,
                batch_rows=rows,
                calibration_n=calibration["n"] if calibration else None,
                default_fpr=calibration["default_fpr"] if calibration else None,
                arrays=arrays,
                reply_to=job.reply_to,
            )
            done.append((delivery, result))
        self.queue.finish(done, self.settings.result_ttl_s)


class InlineBatcher:
    """Embedded mode: the tabular models' jobs, computed on the API's event loop.

    A one-row request costs ONNX Runtime about 0.1 ms, and handing it to the worker thread
    and back cost more than that: a condition wake-up, the GIL passed twice, a self-pipe write
    to wake the loop, and the model run on a cold thread (py-spy: the worker thread spent
    0.44 ms of CPU per request at one client). After each enqueue of a tabular job the API
    schedules ``drain`` once on its loop (``call_soon``): it runs after the requests that the
    same loop iteration received, takes every queued entry of the tabular models (up to
    ``max_batch`` entries a model, the rest in the next drain), and scores them with the
    worker's own ``process``: deadlines, version checks, batching by ``max_batch`` rows,
    publishing before acknowledging and error isolation are those of every worker. Under load
    the requests that arrive while the loop is busy form the next batch, as they do while the
    worker thread computes. Entries of more than ``INLINE_ROWS`` rows are scored in a thread, so
    one large request never holds the loop for long. An entry left unacknowledged by a failure
    is reclaimed by the worker thread, whose ``reclaim`` covers every model.
    """

    INLINE_ROWS = 1024

    def __init__(self, worker: BatchingWorker) -> None:
        self.worker = worker  # over a ``LoadedView``: the event loop never loads a bundle
        self._scheduled = False

    def kick(self, job: Any) -> None:
        """Called on the event loop after ``job`` was enqueued: schedule one drain if it is tabular's."""
        if self._scheduled:
            return
        try:
            kind = self.worker.catalog.get(job.model).manifest.kind
        except LookupError:
            return  # not loaded here (yet): the API refuses such requests before enqueueing
        if kind == "tabular":
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.drain)

    def drain(self) -> None:
        """Score what the tabular models' queues hold now (on the event loop)."""
        self._scheduled = False
        worker = self.worker
        models = worker.collected_models()
        if not models:
            return
        count = max(worker.settings.policy(model).max_batch for model in models)
        try:
            deliveries = worker.queue.read(worker.worker_id, models, count, 0.0)
            small = [delivery for delivery in deliveries if _rows(delivery) <= self.INLINE_ROWS]
            large = [delivery for delivery in deliveries if _rows(delivery) > self.INLINE_ROWS]
            if large:
                asyncio.get_running_loop().run_in_executor(None, self._process, large)
            worker.process(small)
        except Exception:  # noqa: BLE001 - unacknowledged entries are reclaimed by the worker thread
            LOG.exception("inline batch failed; its entries will be reclaimed")
            return
        if len(deliveries) >= count and not self._scheduled:  # more may be queued: next iteration
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.drain)

    def _process(self, deliveries: list[Delivery]) -> None:
        try:
            self.worker.process(deliveries)
        except Exception:  # noqa: BLE001
            LOG.exception("inline batch failed in its thread; its entries will be reclaimed")


def _rows(delivery: Delivery) -> int:
    return int(delivery.job.inputs.shape[0]) if delivery.job is not None else 0


def _checked_inputs(bundle: Any, inputs: np.ndarray) -> np.ndarray:
    """Re-validate on the worker: the API may have validated against another bundle version."""
    from service.inputs import validate_image_batch, validate_tabular_rows

    if bundle.manifest.kind == "tabular":
        return validate_tabular_rows(inputs, bundle.manifest, "rows")
    return validate_image_batch(inputs, bundle.manifest, "images")
