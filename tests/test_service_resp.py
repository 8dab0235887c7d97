"""The API's lean Redis client (``service.queue.resp``) against a real Redis.

Pipelined commands get their own replies in order, error replies keep redis-py's exception
types (``NoScriptError`` is what the enqueue path falls back on), a subscription hands each
message to its callback, and a refused or lost connection is redis-py's ``ConnectionError``
(the API answers 503 on it), after which the next command reconnects.
"""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from service.queue.resp import Address, RedisPipe, Subscription, pack
from tests.service_support import delete_prefix, free_port, redis_url, unique_prefix

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def prefix():
    name = unique_prefix()
    yield name
    delete_prefix(name)


def test_pipelined_commands_get_their_own_replies_in_order(prefix: str) -> None:
    async def scenario() -> list:
        pipe = RedisPipe(redis_url())
        try:
            await pipe.execute("SET", f"{prefix}:a", b"\x00binary\r\n")
            return await asyncio.gather(
                *(pipe.execute("INCRBY", f"{prefix}:n", step) for step in range(1, 51)),
                pipe.execute("GET", f"{prefix}:a"),
                pipe.execute("MGET", f"{prefix}:a", f"{prefix}:missing"),
            )
        finally:
            pipe.close()

    replies = asyncio.run(scenario())
    assert replies[:50] == [sum(range(1, step + 1)) for step in range(1, 51)]
    assert replies[50] == b"\x00binary\r\n" and replies[51] == [b"\x00binary\r\n", None]


def test_error_replies_keep_redis_py_exception_types(prefix: str) -> None:
    async def scenario() -> None:
        pipe = RedisPipe(redis_url())
        try:
            with pytest.raises(NoScriptError):
                await pipe.execute("EVALSHA", "0" * 40, 0)
            await pipe.execute("SET", f"{prefix}:s", "text")
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await pipe.execute("XLEN", f"{prefix}:s")
            assert await pipe.execute("EVAL", "return ARGV[1] + 1", 0, 41) == 42  # still usable
        finally:
            pipe.close()

    asyncio.run(scenario())


def test_a_subscription_hands_over_each_message(prefix: str) -> None:
    channel = f"{prefix}:replies"

    async def scenario() -> list[bytes]:
        received: list[bytes] = []
        subscription = await Subscription.open(redis_url(), channel, received.append)
        try:
            publisher = redis.Redis.from_url(redis_url())
            for index in range(3):
                assert publisher.publish(channel, f"message {index}".encode()) == 1
            for _ in range(100):
                if len(received) == 3:
                    break
                await asyncio.sleep(0.01)
            return received
        finally:
            subscription.close()

    assert asyncio.run(scenario()) == [b"message 0", b"message 1", b"message 2"]


def test_a_refused_or_lost_connection_is_a_connection_error_and_the_next_command_reconnects() -> None:
    async def scenario() -> None:
        with pytest.raises(RedisConnectionError):
            await RedisPipe(f"redis://127.0.0.1:{free_port()}/0").execute("PING")
        pipe = RedisPipe(redis_url())
        try:
            client_id = await pipe.execute("CLIENT", "ID")
            blocked = asyncio.ensure_future(pipe.execute("BLPOP", f"usfad-resp-test-{client_id}:never", 30))
            await asyncio.sleep(0.2)
            assert redis.Redis.from_url(redis_url()).client_kill_filter(_id=client_id) == 1
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(blocked, 10)
            assert await pipe.execute("PING") in (b"PONG", "PONG")  # reconnected
        finally:
            pipe.close()

    asyncio.run(scenario())


def test_urls_are_parsed_as_redis_py_parses_them() -> None:
    address = Address.from_url("redis://user:secret@example.org:6380/3")
    assert (address.host, address.port, address.db, address.username, address.password) == (
        "example.org",
        6380,
        3,
        "user",
        "secret",
    )
    assert address.ssl_context is None
    assert Address.from_url("rediss://example.org:6380/0?ssl_cert_reqs=none").ssl_context is not None
    assert Address.from_url("unix:///tmp/redis.sock?db=2").path == "/tmp/redis.sock"
    assert pack("SET", "k", b"v", 3) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\n3\r\n"
