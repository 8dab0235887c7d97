"""``POST /score/tabular`` answered straight from ASGI, in front of FastAPI.

A one-row request costs the model a few microseconds; py-spy showed FastAPI's layers around
the endpoint (its exception and exit-stack middleware, routing, dependency solving, the
``Request`` object) taking about as much of the API's CPU as everything else together. This
wrapper reads the body and calls the same handler as the FastAPI route (which stays declared,
so OpenAPI and ``/docs`` describe it), and turns errors into the same answers as the app's
exception handlers (``service.http_errors.exception_response``). Everything else goes to FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ClientDisconnected
from service.http_errors import exception_response
from service.scoring import new_request_id
from service.settings import Settings

LOG = logging.getLogger("usfad.api")
PATH = "/score/tabular"
# (request id, content type, body, request state) -> JSON answer
TabularHandler = Callable[[str, str | None, bytes, dict[str, Any]], Awaitable[bytes]]
_JSON_HEADERS = [(b"content-type", b"application/json")]


class TabularFastPath:
    """Serve ``POST /score/tabular`` with ``handler``; pass every other request to ``app``."""

    def __init__(self, app: ASGIApp, handler: TabularHandler, settings: Settings) -> None:
        self.app = app
        self.handler = handler
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["request_id"] = request_id = new_request_id()
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
                break
        try:
            answer = await self.handler(request_id, content_type, await _body(receive), state)
        except ClientDisconnected:
            return
        except Exception as error:  # noqa: BLE001 - every failure becomes the one error shape
            response = exception_response(error, request_id, self.settings)
            if response is None:
                raise  # not ours to answer (BodyTooLarge: the body-limit middleware answers 413)
            await response(scope, receive, send)
            return
        headers = [*_JSON_HEADERS, (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def _body(receive: Receive) -> bytes:
    """The whole request body (``http.request`` events until ``more_body`` is false)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
