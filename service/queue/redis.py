"""Redis Streams work queue: one stream per model, one consumer group of workers.

Keys (all under ``prefix``): ``jobs:<model>`` stream of jobs; ``result:<id>`` the result (set
once, with a TTL); ``dead`` the dead-letter stream; ``heartbeats`` a hash of live workers.
Entries are deleted when acknowledged, so a stream's length is its depth (queued plus in
progress), which the API checks atomically on enqueue.

Replies: a job names its API process's channel ``replies:<api instance>``; the worker publishes
the result there (after ``SET result NX``), and one listener task per API process hands each
result to the request waiting for it (``service.queue.redis_replies``), so a waiting request holds no
Redis connection. Jobs without a channel (tools, tests) get a copy in the list ``reply:<id>``
for a blocking ``BLPOP``."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import CodecError, QueueFull, QueueUnavailable
from service.queue.base import Delivery, Job, Result
from service.queue.redis_replies import ENQUEUE_SCRIPT, ReplyListener, frame
from service.queue.resp import pack

GROUP = "workers"
T = TypeVar("T")

# One script per batch: for each job, store its result (first result wins: ``SET NX``); then
# send each API process ONE message with all of its stored results (length-framed, see
# ``service.queue.redis_replies.unframe``), jobs without a channel get the list ``reply:<id>``; only
# then acknowledge and delete every entry. KEYS per job: result key, reply list, stream.
# ARGV: ttl, group, then per job: framed result ('' = acknowledge only), channel ('' = reply
# list), entry id ('' = nothing to acknowledge). Returns 1/0 per job: whether it stored.
# Before, each job had a script call and a PUBLISH of its own: at 64 jobs a batch, the API's
# listener parsed 64 messages and Redis ran 64 scripts where it now runs one of each.
_FINISH_BATCH = """
local ttl, group = ARGV[1], ARGV[2]
local jobs = #KEYS / 3
local stored, messages, channels = {}, {}, {}
for i = 1, jobs do
  local framed, channel = ARGV[3 * i], ARGV[3 * i + 1]
  stored[i] = 0
  if framed ~= '' then
    local payload = string.sub(framed, 5)
    if redis.call('SET', KEYS[3 * i - 2], payload, 'NX', 'EX', ttl) then
      stored[i] = 1
      if channel ~= '' then
        if messages[channel] == nil then
          messages[channel] = {}
          channels[#channels + 1] = channel
        end
        table.insert(messages[channel], framed)
      else
        redis.call('RPUSH', KEYS[3 * i - 1], payload)
        redis.call('EXPIRE', KEYS[3 * i - 1], ttl)
      end
    end
  end
end
for _, channel in ipairs(channels) do
  redis.call('PUBLISH', channel, table.concat(messages[channel]))
end
for i = 1, jobs do
  local entry = ARGV[3 * i + 2]
  if entry ~= '' then
    redis.call('XACK', KEYS[3 * i], group, entry)
    redis.call('XDEL', KEYS[3 * i], entry)
  end
end
return stored
"""


def _unavailable_on_connection_error(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as error:
            raise QueueUnavailable(f"Redis does not answer ({error})") from error

    return wrapper


def _field_map(fields: list[bytes] | None) -> dict[bytes, bytes] | None:
    """A stream entry's ``[key, value, key, value …]`` as a dict (``None``: deleted while pending)."""
    if fields is None:
        return None
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreamQueue:
    """``WorkQueue`` over Redis Streams (XADD / XREADGROUP / XAUTOCLAIM / XACK)."""

    def __init__(self, url: str, prefix: str = "usfad", max_connections: int = 512) -> None:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=5, socket_connect_timeout=2, socket_keepalive=True
        )
        self.url = url
        self.client = redis.Redis(connection_pool=pool)
        self.prefix = prefix
        self._enqueue_script = self.client.register_script(ENQUEUE_SCRIPT)
        self._finish_script = self.client.register_script(_FINISH_BATCH)
        self._groups_ready: set[str] = set()
        self._replies: ReplyListener | None = None  # the API's async side, made by ``start``
        self._local = threading.local()  # each thread's own connection for ``_command``

    def _command(self, *args: Any) -> Any:
        """One command on this thread's own connection, without redis-py's per-command layers.

        ``Redis.execute_command`` cost about 40 µs of CPU per command (retries, argument
        checks, pool checkout); the worker's loop sends two per batch. The reply is parsed by
        redis-py's (hiredis) parser, so error replies raise ``ResponseError`` / ``NoScriptError``
        and a lost connection ``ConnectionError``; the connection then reconnects on next use.
        """
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self.client.connection_pool.make_connection()
        try:
            connection.send_packed_command([pack(*args)], check_health=False)
            return connection.read_response()
        except ResponseError:  # an error reply: the connection is fine
            raise
        except BaseException:  # lost, or interrupted mid-reply: start afresh next time
            connection.disconnect()
            raise

    def stream(self, model: str) -> str:
        """Key of ``model``'s job stream."""
        return f"{self.prefix}:jobs:{model}"

    @property
    def dead_stream(self) -> str:
        """Key of the dead-letter stream."""
        return f"{self.prefix}:dead"

    def _ensure_group(self, model: str, force: bool = False) -> None:
        stream = self.stream(model)
        if stream in self._groups_ready and not force:
            return
        try:
            self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._groups_ready.add(stream)

    @_unavailable_on_connection_error
    def enqueue(self, job: Job, max_depth: int) -> int:
        """Atomically check the depth and append; ``QueueFull`` beyond ``max_depth``."""
        depth = int(
            self._enqueue_script(
                keys=[self.stream(job.model)], args=[max_depth, job.request_id, job.to_bytes()]
            )
        )
        if depth < 0:
            raise QueueFull(f"queue of model {job.model!r} holds {max_depth} requests already")
        return depth

    # -- the API's async side ---------------------------------------------------------------
    async def start(self) -> None:
        """Open the asyncio client and start listening on this API process's reply channel."""
        if self._replies is None:
            self._replies = ReplyListener(self.url, self.prefix)
            await self._replies.start()

    async def close(self) -> None:
        """Stop the reply listener and close the asyncio client."""
        if self._replies is not None:
            await self._replies.close()
            self._replies = None

    async def enqueue_async(self, job: Job, max_depth: int) -> int:
        """``enqueue`` from the event loop; the reply will come on this process's channel."""
        if self._replies is None:
            await self.start()
        assert self._replies is not None
        return await self._replies.enqueue(job, max_depth)

    async def wait_async(self, request_id: str, timeout_s: float) -> Result | None:
        """The result of a job sent with ``enqueue_async``, or ``None`` after ``timeout_s``."""
        assert self._replies is not None, "enqueue_async first"
        return await self._replies.wait(request_id, timeout_s)

    @_unavailable_on_connection_error
    def depth(self, model: str) -> int:
        """Stream length = queued plus unacknowledged entries."""
        return int(self.client.xlen(self.stream(model)))

    def _deliveries(
        self, model: str, entries: list[Any], counts: dict[str, int] | None = None
    ) -> list[Delivery]:
        deliveries = []
        for entry_id, fields in entries:
            if fields is None:  # deleted while pending
                continue
            entry = _text(entry_id)
            request_id = _text(fields.get(b"rid", b""))
            try:
                job: Job | None = Job.from_bytes(fields[b"job"])
            except (CodecError, KeyError):
                job = None
            deliveries.append(Delivery(entry, model, request_id, (counts or {}).get(entry, 1), job))
        return deliveries

    @_unavailable_on_connection_error
    def read(self, consumer: str, models: list[str], count: int, block_s: float) -> list[Delivery]:
        """``XREADGROUP … COUNT count [BLOCK ms] STREAMS <stream per model> >``; no BLOCK for 0 s."""
        if not models:
            time.sleep(block_s)
            return []
        for model in models:
            self._ensure_group(model)
        streams = [self.stream(model) for model in models]
        block = ("BLOCK", max(1, int(block_s * 1000))) if block_s > 0 else ()  # none: answer at once
        try:
            replies = self._command(
                "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, *block, "STREAMS", *streams,
                *[">"] * len(streams),
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            for model in models:  # a stream was deleted under us: recreate the groups
                self._ensure_group(model, force=True)
            return []
        by_stream = {self.stream(model): model for model in models}
        deliveries: list[Delivery] = []
        # RESP3 (redis-py's default protocol) answers a map of streams, RESP2 a list of pairs.
        for stream, entries in replies.items() if isinstance(replies, dict) else replies or []:
            pairs = [(entry_id, _field_map(fields)) for entry_id, fields in entries]
            deliveries.extend(self._deliveries(by_stream[_text(stream)], pairs))
        return deliveries

    @_unavailable_on_connection_error
    def reclaim(self, consumer: str, models: list[str], min_idle_s: float, count: int) -> list[Delivery]:
        """``XAUTOCLAIM`` entries idle ≥ ``min_idle_s``; delivery counts come from ``XPENDING``."""
        deliveries: list[Delivery] = []
        for model in models:
            self._ensure_group(model)
            stream = self.stream(model)
            reply = self.client.xautoclaim(
                stream, GROUP, consumer, int(min_idle_s * 1000), "0-0", count=count
            )
            entries, deleted = reply[1], reply[2] if len(reply) > 2 else []
            if deleted:
                self.client.xack(stream, GROUP, *deleted)
            if not entries:
                continue
            ids = [_text(entry_id) for entry_id, _ in entries]
            pending = self.client.xpending_range(
                stream, GROUP, min=min(ids), max=max(ids), count=len(ids) + 100
            )
            counts = {_text(item["message_id"]): int(item["times_delivered"]) for item in pending}
            deliveries.extend(self._deliveries(model, entries, counts))
        return deliveries

    @_unavailable_on_connection_error
    def ack(self, deliveries: list[Delivery]) -> None:
        """``XACK`` then ``XDEL`` each entry, in one round trip."""
        if not deliveries:
            return
        pipe = self.client.pipeline(transaction=False)
        for delivery in deliveries:
            stream = self.stream(delivery.model)
            pipe.xack(stream, GROUP, delivery.entry_id)
            pipe.xdel(stream, delivery.entry_id)
        pipe.execute()

    @_unavailable_on_connection_error
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Append the entry's identity and the reason to the dead-letter stream."""
        fields = {
            "request_id": delivery.request_id,
            "model": delivery.model,
            "entry_id": delivery.entry_id,
            "deliveries": delivery.deliveries,
            "reason": reason,
            "time": time.time(),
        }
        self.client.xadd(self.dead_stream, fields, maxlen=100_000, approximate=True)

    @_unavailable_on_connection_error
    def publish(self, result: Result, ttl_s: float) -> bool:
        """``SET result NX EX ttl`` and wake the waiter; ``False`` when a result existed."""
        return bool(self._finish_batch([(None, result)], ttl_s)[0])

    @_unavailable_on_connection_error
    def publish_many(self, results: list[Result], ttl_s: float) -> None:
        """``publish`` every result in one script call."""
        if results:
            self._finish_batch([(None, result) for result in results], ttl_s)

    @_unavailable_on_connection_error
    def finish(self, done: list[tuple[Delivery, Result | None]], ttl_s: float) -> None:
        """Publish each result and only then acknowledge its entry, all in one script call.

        The script (``_FINISH_BATCH``) stores every result (``SET NX``), sends each API process
        one message with its results and only then ``XACK``s and ``XDEL``s the entries, so an
        entry is never acknowledged without its result stored: at-least-once holds even if the
        worker dies mid-batch. A pair without a result (a duplicate) is only acknowledged.
        """
        if done:
            self._finish_batch(done, ttl_s)

    def _finish_batch(self, done: list[tuple[Delivery | None, Result | None]], ttl_s: float) -> list[int]:
        """Run ``_FINISH_BATCH`` for ``done``, loading the script once if Redis lost it."""
        keys: list[str] = []
        args: list[Any] = [max(1, int(ttl_s)), GROUP]
        for delivery, result in done:
            request_id = result.request_id if result is not None else delivery.request_id  # type: ignore[union-attr]
            stream = self.stream(delivery.model) if delivery is not None else f"{self.prefix}:none"
            keys += [f"{self.prefix}:result:{request_id}", f"{self.prefix}:reply:{request_id}", stream]
            args += [
                frame(result.to_bytes()) if result is not None else b"",
                (result.reply_to or "") if result is not None else "",
                delivery.entry_id if delivery is not None else "",
            ]
        try:
            return self._command("EVALSHA", self._finish_script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts; the script is idempotent
            return self._command("EVAL", _FINISH_BATCH, len(keys), *keys, *args)

    @_unavailable_on_connection_error
    def answered(self, request_ids: list[str]) -> set[str]:
        """``EXISTS result:<id>`` for every id, pipelined."""
        if not request_ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.exists(f"{self.prefix}:result:{request_id}")
        return {rid for rid, exists in zip(request_ids, pipe.execute(), strict=True) if exists}

    @_unavailable_on_connection_error
    def has_result(self, request_id: str) -> bool:
        """``EXISTS result:<id>``."""
        return bool(self.client.exists(f"{self.prefix}:result:{request_id}"))

    @_unavailable_on_connection_error
    def wait(self, request_id: str, timeout_s: float) -> Result | None:
        """``BLPOP reply:<id>`` (the result itself) up to ``timeout_s``; else ``GET result:<id>``."""
        if timeout_s > 0:
            popped = self.client.blpop([f"{self.prefix}:reply:{request_id}"], timeout=max(timeout_s, 0.01))
            if popped is not None:
                return Result.from_bytes(popped[1])
        message = self.client.get(f"{self.prefix}:result:{request_id}")
        return Result.from_bytes(message) if message is not None else None

    @_unavailable_on_connection_error
    def heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        """``HSET heartbeats <worker> <json with the time>``."""
        self.client.hset(f"{self.prefix}:heartbeats", worker_id, json.dumps({**info, "seen": time.time()}))

    @_unavailable_on_connection_error
    def forget_worker(self, worker_id: str) -> None:
        """``HDEL heartbeats <worker>``."""
        self.client.hdel(f"{self.prefix}:heartbeats", worker_id)

    @_unavailable_on_connection_error
    def workers(self, max_age_s: float) -> list[dict[str, Any]]:
        """Heartbeats seen within ``max_age_s``."""
        now = time.time()
        beats = [json.loads(value) for value in self.client.hgetall(f"{self.prefix}:heartbeats").values()]
        return [beat for beat in beats if now - float(beat.get("seen", 0)) <= max_age_s]

    def ping(self) -> bool:
        """``PING``; ``False`` instead of an exception when Redis is down."""
        try:
            return bool(self.client.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-letter records (for operators and tests)."""
        entries = self.client.xrevrange(self.dead_stream, count=count)
        return [{_text(key): _text(value) for key, value in fields.items()} for _, fields in entries]
