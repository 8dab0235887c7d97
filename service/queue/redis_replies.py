"""The API's asyncio side of the Redis queue: enqueue jobs, and one listener for all replies.

Each API process subscribes to its own channel ``<prefix>:replies:<instance>`` and names it in
every job it enqueues; workers publish each result there (after storing it with ``SET NX``).
The listener task hands each result to the request waiting for it (an ``asyncio.Future`` per
request id), so a waiting request costs no Redis connection and no command of its own.

Nothing is lost when the subscription drops: results are also stored under ``result:<id>``;
after every (re)subscription the listener fetches those of all waiting requests (``MGET``),
and a request whose deadline passes checks its key once more before answering 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
import uuid
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import CodecError, QueueFull, QueueUnavailable
from service.queue.base import Job, Result, await_or_none
from service.queue.resp import RedisPipe, Subscription

LOG = logging.getLogger("usfad.replies")
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# Depth check and append in one atomic step, so concurrent API processes cannot overshoot
# (the synchronous ``RedisStreamQueue.enqueue`` runs the same script).
ENQUEUE_SCRIPT = """
local depth = redis.call('XLEN', KEYS[1])
if depth >= tonumber(ARGV[1]) then return -1 end
redis.call('XADD', KEYS[1], '*', 'rid', ARGV[2], 'job', ARGV[3])
return depth + 1
"""
# The same for a batch of jobs in one call (KEYS: a stream per job; ARGV: max depth, request
# id, job per job), each checked and appended in turn: one script run instead of one per job.
ENQUEUE_BATCH_SCRIPT = """
local depths = {}
for i = 1, #KEYS do
  local depth = redis.call('XLEN', KEYS[i])
  if depth >= tonumber(ARGV[3 * i - 2]) then
    depths[i] = -1
  else
    redis.call('XADD', KEYS[i], '*', 'rid', ARGV[3 * i - 1], 'job', ARGV[3 * i])
    depths[i] = depth + 1
  end
end
return depths
"""
_FRAME = struct.Struct("<I")


def frame(message: bytes) -> bytes:
    """``uint32 length (little endian) | message``: results travel concatenated, one message per batch."""
    return _FRAME.pack(len(message)) + message


def unframe(data: bytes) -> list[bytes]:
    """Inverse of concatenated ``frame``s; ``CodecError`` when a length runs past the end."""
    parts, offset = [], 0
    view = memoryview(data)
    while offset < len(data):
        if offset + _FRAME.size > len(data):
            raise CodecError("reply message ends inside a frame header")
        (length,) = _FRAME.unpack_from(data, offset)
        offset += _FRAME.size
        if offset + length > len(data):
            raise CodecError("reply message is shorter than its frame says")
        parts.append(bytes(view[offset : offset + length]))
        offset += length
    return parts


class ReplyListener:
    """Enqueues jobs and resolves their results from one pub/sub channel (``service.queue.resp``)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.client = RedisPipe(url)  # every command of this process, pipelined on one connection
        self.prefix = prefix
        self.channel = f"{prefix}:replies:{uuid.uuid4().hex[:16]}"
        self._enqueue_sha = hashlib.sha1(ENQUEUE_BATCH_SCRIPT.encode()).hexdigest()
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # Auto-pipelining: enqueues that arrive while a pipeline is in flight go out together in the next.
        self._outbox: list[tuple[Job, int, asyncio.Future[int]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the listener task (it subscribes, and resubscribes after Redis outages)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="usfad-reply-listener")
            with contextlib.suppress(TimeoutError):  # Redis may be down: requests then get 503
                await asyncio.wait_for(self._subscribed.wait(), timeout=0.5)

    async def close(self) -> None:
        """Stop listening and close the connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.client.close()

    async def enqueue(self, job: Job, max_depth: int) -> int:
        """Register the waiter, then append ``job`` (naming this channel) if the depth allows it.

        Enqueues from concurrent requests are sent together: one pipelined round trip (one
        ``EVALSHA`` of the depth-checking script per job) for all that arrived meanwhile.
        """
        loop = asyncio.get_running_loop()
        self._waiters[job.request_id] = loop.create_future()
        sent: asyncio.Future[int] = loop.create_future()
        self._outbox.append((job, max_depth, sent))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_outbox())
        try:
            depth = await sent
        except BaseException:
            self._waiters.pop(job.request_id, None)
            raise
        if depth < 0:
            self._waiters.pop(job.request_id, None)
            raise QueueFull(f"queue of model {job.model!r} holds {max_depth} requests already")
        return depth

    async def _send_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                replies = await self._evalsha_all(batch)
            except _UNAVAILABLE as error:
                replies = [QueueUnavailable(f"Redis does not answer ({error})") for _ in batch]
            except RedisError as error:
                replies = [RedisError(str(error)) for _ in batch]
            for (_, _, sent), reply in zip(batch, replies, strict=True):
                if sent.done():
                    continue
                if isinstance(reply, BaseException):
                    sent.set_exception(reply)
                else:
                    sent.set_result(int(reply))

    async def _evalsha_all(self, batch: list[tuple[Job, int, asyncio.Future[int]]]) -> list:
        """Check the depth and append every job of ``batch`` in one script call (one round trip)."""
        keys: list[str] = []
        args: list[Any] = []
        for job, max_depth, _ in batch:
            keys.append(f"{self.prefix}:jobs:{job.model}")
            args += [max_depth, job.request_id, job.to_bytes(reply_to=self.channel)]
        try:
            return await self.client.execute("EVALSHA", self._enqueue_sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: nothing was appended
            return await self.client.execute("EVAL", ENQUEUE_BATCH_SCRIPT, len(keys), *keys, *args)

    async def wait(self, request_id: str, timeout_s: float) -> Result | None:
        """The result of an enqueued request, or ``None`` when ``timeout_s`` passes first."""
        future = self._waiters.get(request_id)
        if future is None:
            return await self._stored(request_id)
        result = await await_or_none(future, timeout_s)
        self._waiters.pop(request_id, None)
        if result is None:
            return await self._stored(request_id)  # published while the subscription was down?
        return result

    async def _stored(self, request_id: str) -> Result | None:
        try:
            message = await self.client.execute("GET", f"{self.prefix}:result:{request_id}")
        except _UNAVAILABLE as error:
            raise QueueUnavailable(f"Redis does not answer ({error})") from error
        return Result.from_bytes(message) if message is not None else None

    def _resolve(self, message: bytes, framed: bool = True) -> None:
        """Hand each result in ``message`` (framed results of a batch, or one stored result) to its waiter."""
        try:
            results = [Result.from_bytes(part) for part in (unframe(message) if framed else [message])]
        except (CodecError, TypeError) as error:
            LOG.error("undecodable reply on %s: %s", self.channel, error)
            return
        for result in results:
            future = self._waiters.get(result.request_id)
            if future is not None and not future.done():
                future.set_result(result)

    async def _sweep(self) -> None:
        """Resolve waiting requests whose results were stored while we were not subscribed."""
        waiting = [request_id for request_id, future in self._waiters.items() if not future.done()]
        for start in range(0, len(waiting), 500):
            chunk = waiting[start : start + 500]
            messages = await self.client.execute("MGET", *[f"{self.prefix}:result:{rid}" for rid in chunk])
            for message in messages:
                if message is not None:
                    self._resolve(message, framed=False)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            subscription = None
            try:
                # Each message is resolved as it is parsed (``_resolve`` runs in the protocol's
                # ``data_received``): no task wakes up per message.
                subscription = await Subscription.open(self.url, self.channel, self._resolve)
                self._subscribed.set()
                await self._sweep()
                backoff = 0.1
                await subscription.wait_closed()
                raise RedisConnectionError("the reply subscription's connection was lost")
            except asyncio.CancelledError:
                if subscription is not None:
                    subscription.close()
                raise
            except (RedisError, OSError) as error:
                self._subscribed.clear()
                LOG.warning("reply channel lost (%s); resubscribing in %.1fs", error, backoff)
                if subscription is not None:
                    subscription.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

