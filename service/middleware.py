"""ASGI layers before FastAPI: body-size limit (before the body is read), request metrics, bearer tokens."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge
from service.metrics import ApiMetrics, BoundChildren

OPEN_PATHS = ("/health/live", "/health/ready")  # answered without a bearer token


async def send_error(
    send: Send, status: int, message: str, field: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer ``status`` in the error shape straight from ASGI (these layers sit before FastAPI)."""
    body = json.dumps({"error": {"field": field, "message": message}, "request_id": None}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Answer 413 when ``Content-Length`` exceeds ``max_bytes``, or once a streamed body does.

    A declared length is refused before a single body byte is read; a chunked body is counted
    while it streams and cut off at the limit, so a 50 MB upload never sits in memory.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        declared = chunked = None
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                chunked = value
        if declared is not None:
            try:
                length: int | None = int(declared)
            except ValueError:
                length = None
            if length is not None and length > self.max_bytes:
                await send_error(send, 413, message, "body", ((b"connection", b"close"),))
                return
            if length is not None and chunked is None:
                # The server reads exactly the declared length, so the body cannot pass the limit:
                # nothing to count (two wrappers less per request on the hot path).
                await self.app(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return event

        async def tracking_send(event: Message) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_error(send, 413, message, "body", ((b"connection", b"close"),))


class RequestMetrics:
    """Counts requests (endpoint, model, status) and times them; tracks requests in flight.

    Handlers put the validated model name in ``request.state.model`` (``scope["state"]``);
    unknown or invalid names are counted as ``"-"`` so label values stay bounded.
    """

    def __init__(
        self, app: ASGIApp, metrics: ApiMetrics, paths: tuple[str, ...] = ("/score/tabular", "/score/image")
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths
        # Label values are bounded: paths, validated model names or "-", HTTP statuses.
        self._requests = BoundChildren(metrics.requests)
        self._latency = BoundChildren(metrics.latency)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.paths:
            await self.app(scope, receive, send)
            return
        status: dict[str, Any] = {"code": 500}
        started = time.perf_counter()

        async def recording_send(event: Message) -> None:
            if event["type"] == "http.response.start":
                status["code"] = event["status"]
            await send(event)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.in_flight.dec()
            model = scope.get("state", {}).get("model", "-")
            self._requests(path, model, str(status["code"])).inc()
            self._latency(path, model).observe(time.perf_counter() - started)


class BearerAuth:
    """Optional bearer-token check: 401 with ``WWW-Authenticate`` unless a configured token is sent.

    ``tokens`` guard every path but ``open_paths``; ``metrics_tokens`` (a superset) guard
    ``/metrics``. With no tokens configured the middleware lets everything through. Tokens are
    compared with ``hmac.compare_digest`` against every configured token (no early exit), so
    the answer time does not tell how much of a guess was right; they are never logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        tokens: tuple[str, ...],
        metrics_tokens: tuple[str, ...] = (),
        open_paths: tuple[str, ...] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.tokens = tuple(token.encode() for token in tokens)
        self.metrics_tokens = tuple(token.encode() for token in metrics_tokens) or self.tokens
        self.open_paths = open_paths

    def _accepted(self, header: bytes | None, tokens: tuple[bytes, ...]) -> bool:
        if header is None or header[:7].lower() != b"bearer ":
            return False
        sent = header[7:].strip()
        return any([hmac.compare_digest(sent, token) for token in tokens])  # noqa: C419 - compare all

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.tokens or path in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self._accepted(header, self.metrics_tokens if path == "/metrics" else self.tokens):
            await self.app(scope, receive, send)
            return
        challenge = b'Bearer realm="usfad"' + (b', error="invalid_token"' if header is not None else b"")
        message = "a valid bearer token is required (Authorization: Bearer <token>)"
        await send_error(send, 401, message, "authorization", ((b"www-authenticate", challenge),))
