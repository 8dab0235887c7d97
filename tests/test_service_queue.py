"""Queue semantics shared by Redis Streams and the in-process queue, driven by the real worker.

Every test runs against both ``RedisStreamQueue`` (real Redis, a key prefix of its own) and
``InProcessQueue``: batching, deadlines, reclaiming from a dead consumer, dead letters,
idempotent results and the depth limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.bundles.catalog import BundleCatalog
from service.errors import QueueFull
from service.metrics import WorkerMetrics
from service.queue.base import Delivery, Job, Result
from service.queue.memory import InProcessQueue
from service.queue.redis import RedisStreamQueue
from service.settings import BatchPolicy, Settings
from service.worker import BatchingWorker, InlineBatcher
from tests.service_support import (
    IMAGE_MODEL,
    TABULAR_MODEL,
    cardio_rows,
    delete_prefix,
    model_dir,
    redis_url,
    unique_prefix,
)

pytestmark = pytest.mark.timeout(600)  # the first test may train the shared bundles (model_dir)


@pytest.fixture(params=["redis", "memory"])
def queue(request: pytest.FixtureRequest) -> Iterator[RedisStreamQueue | InProcessQueue]:
    if request.param == "memory":
        yield InProcessQueue()
        return
    prefix = unique_prefix()
    redis_queue = RedisStreamQueue(redis_url(), prefix)
    yield redis_queue
    delete_prefix(prefix)


@pytest.fixture(scope="module")
def registry() -> BundleCatalog:
    return BundleCatalog(model_dir(), device="cpu", threads=1, interval_s=60)


def make_worker(queue, registry: BundleCatalog, **overrides) -> tuple[BatchingWorker, CollectorRegistry]:
    collector = CollectorRegistry()
    settings = Settings(
        model_dir=model_dir(),
        worker_id=overrides.pop("worker_id", "worker-a"),
        reclaim_interval_s=overrides.pop("reclaim_interval_s", 3600.0),  # no reclaim unless a test asks
        request_timeout_s=10_000.0,  # so that the settings' reclaim-vs-deadline relation allows that
        batch_policies={
            TABULAR_MODEL: BatchPolicy(max_batch=overrides.pop("max_batch", 64), max_delay_s=0.05)
        },
        **overrides,
    )
    return BatchingWorker(queue, registry, settings, WorkerMetrics(collector)), collector


def job(rows: np.ndarray, request_id: str, deadline_in_s: float = 30.0) -> Job:
    now = time.time()
    return Job(request_id, TABULAR_MODEL, None, now + deadline_in_s, now, rows)


def sample(collector: CollectorRegistry, name: str) -> float:
    value = collector.get_sample_value(name, {"model": TABULAR_MODEL})
    return 0.0 if value is None else value


def test_queued_requests_are_scored_in_one_batch_with_per_request_results(queue, registry) -> None:
    _, rows = cardio_rows()
    for index in range(10):
        queue.enqueue(job(rows[index : index + 1], f"r{index}"), max_depth=100)
    worker, collector = make_worker(queue, registry)
    assert worker.step() == 10
    assert (
        sample(collector, "usfad_batch_size_count") == 1 and sample(collector, "usfad_batch_size_sum") == 10
    )
    expected = registry.get(TABULAR_MODEL).run(rows[:10]).score
    for index in range(10):
        result = queue.wait(f"r{index}", 1.0)
        assert result is not None and result.status == 200 and result.batch_rows == 10
        np.testing.assert_allclose(result.arrays["score"], expected[index : index + 1], rtol=1e-6)
    assert queue.depth(TABULAR_MODEL) == 0  # acknowledged and removed


def test_a_lone_request_does_not_wait_for_the_batching_delay(queue, registry) -> None:
    _, rows = cardio_rows()
    worker, collector = make_worker(queue, registry)
    worker.settings = Settings(
        model_dir=model_dir(),
        worker_id="worker-a",
        reclaim_interval_s=3600.0,
        request_timeout_s=10_000.0,  # the reclaim-vs-deadline relation, with reclaim switched off
        batch_policies={TABULAR_MODEL: BatchPolicy(max_batch=64, max_delay_s=30.0)},
    )
    queue.enqueue(job(rows[:1], "alone"), max_depth=100)
    started = time.monotonic()
    assert worker.step() == 1
    assert time.monotonic() - started < 10.0  # computed at once, not after max_delay (30 s)
    assert queue.wait("alone", 1.0).status == 200


def test_one_batch_publishes_each_result_to_its_own_waiter(queue, registry) -> None:
    """A batch's results travel in one reply message per API process; each request gets its own."""
    _, rows = cardio_rows()

    async def scenario() -> list[Result | None]:
        await queue.start()
        try:
            for index in range(6):
                await queue.enqueue_async(job(rows[index : index + 1], f"batch-{index}"), max_depth=100)
            worker, collector = make_worker(queue, registry)
            assert await asyncio.to_thread(worker.step) == 6
            assert sample(collector, "usfad_batch_size_count") == 1
            return [await queue.wait_async(f"batch-{index}", 5.0) for index in range(6)]
        finally:
            await queue.close()

    results = asyncio.run(scenario())
    expected = registry.get(TABULAR_MODEL).run(rows[:6]).score
    for index, result in enumerate(results):
        assert result is not None and result.request_id == f"batch-{index}" and result.batch_rows == 6
        np.testing.assert_allclose(result.arrays["score"], expected[index : index + 1], rtol=1e-6)


def test_anomaly_maps_travel_back_only_when_the_answer_needs_them(queue, registry) -> None:
    bundle = registry.get(IMAGE_MODEL)
    height, width = bundle.manifest.image_size
    pixels = np.random.default_rng(0).integers(0, 255, (1, height, width, bundle.manifest.channels), np.uint8)
    now = time.time()
    for request_id, maps in (("with-map", True), ("without-map", False)):
        queue.enqueue(Job(request_id, IMAGE_MODEL, None, now + 30, now, pixels, maps=maps), max_depth=10)
    worker, _ = make_worker(queue, registry)
    while queue.depth(IMAGE_MODEL):
        worker.step()
    with_map, without_map = queue.wait("with-map", 5.0), queue.wait("without-map", 5.0)
    assert with_map.arrays["anomaly_map"].shape == (1, height, width)
    assert "anomaly_map" not in without_map.arrays
    np.testing.assert_allclose(without_map.arrays["score"], with_map.arrays["score"], rtol=1e-6)


def test_max_batch_splits_large_batches(queue, registry) -> None:
    _, rows = cardio_rows()
    for index in range(5):
        queue.enqueue(job(rows[2 * index : 2 * index + 2], f"b{index}"), max_depth=100)
    worker, collector = make_worker(queue, registry, max_batch=4)
    while queue.depth(TABULAR_MODEL):
        worker.step()
    assert sample(collector, "usfad_batch_size_sum") == 10
    assert sample(collector, "usfad_batch_size_count") == 3  # 4 + 4 + 2 rows
    assert all(queue.wait(f"b{index}", 1.0).status == 200 for index in range(5))


def test_expired_requests_are_dropped_before_compute(queue, registry) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "late", deadline_in_s=-1.0), max_depth=100)
    worker, collector = make_worker(queue, registry)
    worker.step()
    result = queue.wait("late", 1.0)
    assert result is not None and result.status == 504 and "deadline" in result.error
    assert sample(collector, "usfad_expired_total") == 1
    assert sample(collector, "usfad_batch_size_count") == 0  # nothing was computed


def test_entries_of_a_dead_worker_are_reclaimed_and_answered(queue, registry) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:2], "orphan"), max_depth=100)
    taken = queue.read("dead-worker", [TABULAR_MODEL], count=10, block_s=0.5)
    assert [d.request_id for d in taken] == ["orphan"]  # read, then the worker "dies" without ack
    worker, collector = make_worker(queue, registry, reclaim_idle_s=0.2, reclaim_interval_s=0.0)
    assert queue.wait("orphan", 0.01) is None
    time.sleep(0.3)
    worker.step()
    result = queue.wait("orphan", 1.0)
    assert result is not None and result.status == 200 and result.arrays["score"].shape == (2,)
    assert sample(collector, "usfad_reclaimed_total") == 1
    assert queue.depth(TABULAR_MODEL) == 0


def test_entries_delivered_too_often_go_to_the_dead_letter_stream(queue, registry) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "poison"), max_depth=100)
    queue.read("crashing-worker-1", [TABULAR_MODEL], count=10, block_s=0.5)  # delivery 1
    time.sleep(0.15)
    assert len(queue.reclaim("crashing-worker-2", [TABULAR_MODEL], 0.1, 10)) == 1  # delivery 2
    time.sleep(0.15)
    worker, collector = make_worker(
        queue, registry, reclaim_idle_s=0.1, reclaim_interval_s=0.0, max_deliveries=2
    )
    worker.step()  # delivery 3 > 2: dead-lettered, and the client gets an error instead of silence
    result = queue.wait("poison", 1.0)
    assert result is not None and result.status == 500 and "dead-lettered" in result.error
    assert sample(collector, "usfad_dead_lettered_total") == 1
    dead = queue.dead_letters() if isinstance(queue, RedisStreamQueue) else queue.dead
    assert [record["request_id"] for record in dead] == ["poison"]
    assert queue.depth(TABULAR_MODEL) == 0


def test_results_are_idempotent_by_request_id(queue, registry) -> None:
    first = Result("same-id", 200, version="v1", arrays={"score": np.array([1.0], dtype=np.float32)})
    second = Result("same-id", 200, version="v2", arrays={"score": np.array([2.0], dtype=np.float32)})
    assert queue.publish(first, ttl_s=30) is True
    assert queue.publish(second, ttl_s=30) is False
    kept = queue.wait("same-id", 0.5)
    assert kept.version == "v1" and kept.arrays["score"].tolist() == [1.0]


def test_a_redelivered_request_with_a_result_is_not_computed_again(queue, registry) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "done-before"), max_depth=100)
    assert len(queue.read("stalled-worker", [TABULAR_MODEL], count=10, block_s=0.5)) == 1  # delivery 1
    queue.publish(Result("done-before", 200, version="earlier"), ttl_s=30)  # its result, but no ack
    time.sleep(0.15)
    worker, collector = make_worker(queue, registry, reclaim_idle_s=0.1, reclaim_interval_s=0.0)
    worker.step()  # reclaims it (delivery 2), finds the result and only acknowledges
    assert sample(collector, "usfad_batch_size_count") == 0
    assert queue.wait("done-before", 0.5).version == "earlier"
    assert queue.depth(TABULAR_MODEL) == 0


def test_depth_limit_refuses_at_once(queue) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "one"), max_depth=2)
    queue.enqueue(job(rows[:1], "two"), max_depth=2)
    started = time.monotonic()
    with pytest.raises(QueueFull, match="holds 2 requests"):
        queue.enqueue(job(rows[:1], "three"), max_depth=2)
    assert time.monotonic() - started < 0.5
    assert queue.depth(TABULAR_MODEL) == 2


def test_a_request_for_another_version_gets_404(queue, registry) -> None:
    _, rows = cardio_rows()
    now = time.time()
    queue.enqueue(Job("old-version", TABULAR_MODEL, "no-such-version", now + 30, now, rows[:1]), max_depth=10)
    worker, _ = make_worker(queue, registry)
    worker.step()
    result = queue.wait("old-version", 1.0)
    assert result.status == 404 and "no-such-version" in result.error


def test_undecodable_entries_are_dead_lettered(registry) -> None:
    prefix = unique_prefix()
    queue = RedisStreamQueue(redis_url(), prefix)
    try:
        queue.client.xadd(queue.stream(TABULAR_MODEL), {"rid": "garbled", "job": b"\x00\x01not a job"})
        worker, collector = make_worker(queue, registry)
        worker.step()
        assert queue.wait("garbled", 1.0).status == 500
        assert sample(collector, "usfad_dead_lettered_total") == 1
        assert queue.dead_letters()[0]["reason"] == "entry cannot be decoded"
    finally:
        delete_prefix(prefix)


def test_heartbeat_lists_loaded_models_and_no_heavy_modules_in_the_worker_code(queue, registry) -> None:
    worker, _ = make_worker(queue, registry, worker_id="hb-worker")
    worker.heartbeat(force=True)
    beats = queue.workers(max_age_s=5)
    assert [b["worker"] for b in beats] == ["hb-worker"]
    assert set(beats[0]["models"]) == set(registry.names()) and beats[0]["device"] == "cpu"
    queue.forget_worker("hb-worker")
    assert queue.workers(max_age_s=5) == []


def test_delivery_counts_start_at_one(queue) -> None:
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "count"), max_depth=10)
    (delivery,) = queue.read("w", [TABULAR_MODEL], count=1, block_s=0.5)
    assert isinstance(delivery, Delivery) and delivery.deliveries == 1 and delivery.job.request_id == "count"
    queue.ack([delivery])
    assert queue.depth(TABULAR_MODEL) == 0


def test_one_bad_job_in_a_batch_fails_alone(queue, registry) -> None:
    """A job the API could not have validated (wrong width) gets its own error; its batch mates succeed."""
    _, rows = cardio_rows()
    queue.enqueue(job(rows[:1], "good-1"), max_depth=10)
    queue.enqueue(job(rows[:1, :20].copy(), "too-narrow"), max_depth=10)
    queue.enqueue(job(rows[1:2], "good-2"), max_depth=10)
    worker, _ = make_worker(queue, registry)
    worker.step()
    bad = queue.wait("too-narrow", 1.0)
    assert bad.status == 422 and "must have shape [N>0, 21], got [1, 20]" in bad.error
    assert queue.wait("good-1", 1.0).status == 200 and queue.wait("good-2", 1.0).status == 200
    assert queue.depth(TABULAR_MODEL) == 0


def _run_async(queue, scenario):
    """Run ``scenario()`` in an event loop with the queue's asyncio side started, as the API does."""

    async def wrapped():
        await queue.start()
        try:
            return await scenario()
        finally:
            await queue.close()

    return asyncio.run(wrapped())


def test_async_enqueue_and_wait_get_the_workers_result(queue, registry) -> None:
    """The API's path: enqueue and await in the event loop while a worker (another thread) scores."""
    _, rows = cardio_rows()
    worker, _ = make_worker(queue, registry)

    async def scenario():
        assert await queue.enqueue_async(job(rows[:3], "async-1"), max_depth=10) == 1
        stepped = asyncio.get_running_loop().run_in_executor(None, worker.step)
        result = await queue.wait_async("async-1", 10.0)
        assert await stepped == 1
        return result

    result = _run_async(queue, scenario)
    assert result is not None and result.status == 200 and result.batch_rows == 3
    expected = registry.get(TABULAR_MODEL).run(rows[:3]).score
    np.testing.assert_allclose(result.arrays["score"], expected, rtol=1e-6)
    assert queue.depth(TABULAR_MODEL) == 0


def test_async_wait_times_out_without_a_worker_and_full_queue_refuses(queue) -> None:
    _, rows = cardio_rows()

    async def scenario():
        await queue.enqueue_async(job(rows[:1], "nobody-home"), max_depth=1)
        with pytest.raises(QueueFull):
            await queue.enqueue_async(job(rows[:1], "one-too-many"), max_depth=1)
        started = time.monotonic()
        result = await queue.wait_async("nobody-home", 0.3)
        return result, time.monotonic() - started

    result, waited = _run_async(queue, scenario)
    assert result is None and 0.25 <= waited < 3.0


def test_async_wait_finds_a_result_stored_without_a_reply(queue) -> None:
    """A result that never reached the reply channel (e.g. published while it was down) is still found."""
    _, rows = cardio_rows()

    async def scenario():
        await queue.enqueue_async(job(rows[:1], "stored-only"), max_depth=10)
        queue.publish(Result("stored-only", 200, version="v-stored"), ttl_s=30)  # no reply channel named
        return await queue.wait_async("stored-only", 0.5)

    result = _run_async(queue, scenario)
    assert result is not None and result.version == "v-stored"


def _inline(registry: BundleCatalog) -> tuple[InProcessQueue, InlineBatcher, CollectorRegistry]:
    """The embedded mode's pair: an in-process queue whose tabular jobs are scored on the loop."""
    registry.refresh(force=True)
    queue = InProcessQueue()
    worker, collector = make_worker(queue, registry)
    inline = BatchingWorker(queue, registry.loaded(), worker.settings, worker.metrics, ("tabular",))
    batcher = InlineBatcher(inline)
    queue.on_enqueue = batcher.kick
    return queue, batcher, collector


def test_inline_batcher_scores_one_loop_iterations_requests_in_one_batch(registry) -> None:
    """Embedded mode: requests enqueued in the same loop iteration form one batch, with no worker thread."""
    _, rows = cardio_rows()
    queue, _, collector = _inline(registry)

    async def request(index: int) -> Result | None:
        await queue.enqueue_async(job(rows[index : index + 1], f"inline-{index}"), max_depth=100)
        return await queue.wait_async(f"inline-{index}", 10.0)

    async def scenario() -> list[Result | None]:
        alone = await request(10)  # a lone request is answered at once
        assert alone is not None and alone.batch_rows == 1
        return await asyncio.gather(*(request(index) for index in range(8)))

    results = asyncio.run(scenario())
    expected = registry.get(TABULAR_MODEL).run(rows[:8]).score
    for index, result in enumerate(results):
        assert result is not None and result.status == 200 and result.batch_rows == 8
        np.testing.assert_allclose(result.arrays["score"], expected[index : index + 1], rtol=1e-6)
    assert sample(collector, "usfad_batch_size_count") == 2 and sample(collector, "usfad_batch_size_sum") == 9
    assert queue.depth(TABULAR_MODEL) == 0


def test_inline_batcher_keeps_deadlines_and_scores_large_requests_in_a_thread(registry) -> None:
    _, rows = cardio_rows()
    queue, batcher, _ = _inline(registry)
    batcher.INLINE_ROWS = 2  # a 3-row request is scored off the event loop

    async def scenario() -> tuple[Result | None, Result | None]:
        await queue.enqueue_async(job(rows[:3], "large"), max_depth=100)
        await queue.enqueue_async(job(rows[:1], "expired", deadline_in_s=-1.0), max_depth=100)
        return await queue.wait_async("large", 10.0), await queue.wait_async("expired", 10.0)

    large, expired = asyncio.run(scenario())
    assert large is not None and large.status == 200 and large.batch_rows == 3
    assert expired is not None and expired.status == 504
    assert queue.depth(TABULAR_MODEL) == 0


def test_a_worker_limited_to_image_models_leaves_tabular_jobs_queued(registry) -> None:
    """The embedded worker thread collects image jobs only (tabular ones are the loop's)."""
    _, rows = cardio_rows()
    queue = InProcessQueue()
    worker, _ = make_worker(queue, registry)
    worker.kinds = ("image",)
    queue.enqueue(job(rows[:1], "left-for-the-loop"), max_depth=10)
    worker.collect(poll_s=0.01)
    assert TABULAR_MODEL not in worker.collected_models() and queue.depth(TABULAR_MODEL) == 1
