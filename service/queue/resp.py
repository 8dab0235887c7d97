"""A lean asyncio Redis client for the API's hot path: pipelined commands and one subscription.

redis-py's asyncio client spent about 80 µs of CPU per command (connection pool, locks,
``StreamReader``, retry and argument layers) and as much per pub/sub message, where the work
is a few microseconds: two of them per one-row request made the API's Redis side cost more
than the whole bare floor app (py-spy). Here an ``asyncio.Protocol`` writes each command at
once on one connection (Redis answers in order, so concurrent commands pipeline) and parses
replies with hiredis as they arrive, resolving one future each; a subscriber connection hands
every pushed message to a callback inside ``data_received``. Errors keep redis-py's types, so
callers handle them as before: ``redis.exceptions.ConnectionError`` when the connection cannot
be made or is lost (every command then in flight fails with it), ``TimeoutError`` when
connecting takes longer than ``connect_timeout_s``, ``ResponseError`` / ``NoScriptError`` for
error replies. URLs are parsed by redis-py (``redis://``, ``rediss://``, ``unix://``, user,
password, ``db``, the ``ssl_*`` options).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError


def pack(*args: bytes | str | int | float) -> bytes:
    """A command in RESP (hiredis's C packer: ``*<n>``, then ``$<len>`` and the bytes of each argument)."""
    return hiredis.pack_command(args)


@dataclass(frozen=True)
class Address:
    """Where and how to connect, from a Redis URL."""

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> Address:
        options = parse_url(url)
        connection_class = options.get("connection_class")
        context = None
        if connection_class is SSLConnection:
            context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if options.get("ssl_certfile"):
                context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
            required = str(options.get("ssl_cert_reqs", "required")).lower()
            if required in ("none", "optional"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE if required == "none" else ssl.CERT_OPTIONAL
            elif str(options.get("ssl_check_hostname", "true")).lower() in ("false", "0", "no"):
                context.check_hostname = False
        unix = connection_class is UnixDomainSocketConnection
        return cls(
            host=None if unix else options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            db=int(options.get("db", 0) or 0),
            username=options.get("username"),
            password=options.get("password"),
            ssl_context=context,
        )


class _Protocol(asyncio.Protocol):
    """One connection: replies resolve the waiting futures in order, or go to ``on_push``."""

    def __init__(self, on_push: Callable[[Any], None] | None = None) -> None:
        # Error replies become redis-py's exceptions, as its own hiredis parser makes them
        # (``NOSCRIPT`` → ``NoScriptError``, ``LOADING`` → ``BusyLoadingError``, a ``ConnectionError``).
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.on_push = on_push
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError:  # not Redis speaking: drop the connection (waiters fail)
                if self.transport is not None:
                    self.transport.close()
                return
            if reply is False:
                return
            if self.waiters:  # commands (and a subscriber's SUBSCRIBE) are answered in order
                waiter = self.waiters.popleft()
                if not waiter.done():
                    if isinstance(reply, RedisError):
                        waiter.set_exception(reply)
                    else:
                        waiter.set_result(reply)
            elif self.on_push is not None:
                self.on_push(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisConnectionError(f"connection to Redis lost ({exc or 'closed'})")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)
        self.transport = None

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("connection to Redis lost")
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        self.transport.write(command)
        return waiter


async def _connect(address: Address, timeout_s: float, on_push: Callable[[Any], None] | None) -> _Protocol:
    loop = asyncio.get_running_loop()
    protocol: _Protocol | None = None
    try:
        async with asyncio.timeout(timeout_s):
            if address.path is not None:
                _, protocol = await loop.create_unix_connection(lambda: _Protocol(on_push), address.path)
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(on_push), address.host, address.port, ssl=address.ssl_context
                )
            if address.password is not None:
                user = (address.username,) if address.username else ()
                await protocol.send(pack("AUTH", *user, address.password))
            if address.db:
                await protocol.send(pack("SELECT", address.db))
    except BaseException as error:
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        if isinstance(error, TimeoutError):
            raise RedisTimeoutError(f"connecting to Redis took more than {timeout_s:g} s") from None
        if isinstance(error, OSError):
            raise RedisConnectionError(f"cannot connect to Redis ({error})") from error
        raise
    return protocol


class RedisPipe:
    """Commands on one connection, pipelined; it reconnects on the next command after a loss."""

    def __init__(self, url: str, connect_timeout_s: float = 2.0) -> None:
        self.address = Address.from_url(url)
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def execute(self, *args: bytes | str | int | float) -> Any:
        """Send one command and return its reply (``ResponseError`` for an error reply)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connect()
        return await protocol.send(pack(*args))

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # one connection attempt for all the commands that wait
            if self._protocol is None or self._protocol.transport is None:
                self._protocol = await _connect(self.address, self.connect_timeout_s, None)
            return self._protocol

    def close(self) -> None:
        """Close the connection (commands in flight fail with ``ConnectionError``)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class Subscription:
    """``SUBSCRIBE channel`` on a connection of its own; each message's data goes to ``on_message``."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls, url: str, channel: str, on_message: Callable[[bytes], None], connect_timeout_s: float = 2.0
    ) -> Subscription:
        """Connect and subscribe; returns once Redis confirmed the subscription."""

        def on_push(reply: Any) -> None:
            if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                on_message(reply[2])

        protocol = await _connect(Address.from_url(url), connect_timeout_s, on_push)
        try:
            await protocol.send(pack("SUBSCRIBE", channel))  # the confirmation is the reply
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()
            raise
        return cls(protocol)

    async def wait_closed(self) -> None:
        """Return when the connection is lost (the caller resubscribes)."""
        await self._protocol.lost

    def close(self) -> None:
        """Close the connection."""
        if self._protocol.transport is not None:
            self._protocol.transport.close()
