"""HTTP error answers: every failure becomes ``{"error": {"field", "message"}, "request_id"}``.

Never a traceback: input errors name the field (422/413/415), unknown models 404, a full queue
429 and an unreachable Redis 503 (both with ``Retry-After``), worker failures their own status.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BodyTooLarge, InputError, ModelNotFound, QueueFull, QueueUnavailable, ServiceError
from service.settings import Settings

LOG = logging.getLogger("usfad.api")


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    request_id: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    """The one error shape: ``{"error": {"field", "message"}, "request_id"}``."""
    body = {"error": {"field": field, "message": message}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def field_of(location: tuple[Any, ...]) -> str:
    """Pydantic's error location as a field path: ``("body", "rows", 3)`` → ``rows[3]``."""
    parts = [str(part) for part in location if part not in ("body", "query")]
    text = ""
    for part in parts:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text or "body"


def install_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Register the handlers that turn every exception into the error shape above."""

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return error_response(
            error.status, error.message, error.field, getattr(request.state, "request_id", None)
        )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        return error_response(
            error.status, error.message, error.field, getattr(request.state, "request_id", None)
        )

    @app.exception_handler(ModelNotFound)
    async def model_not_found(request: Request, error: ModelNotFound) -> JSONResponse:
        return error_response(404, str(error.args[0]), "model", getattr(request.state, "request_id", None))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull) -> JSONResponse:
        headers = {"Retry-After": str(settings.retry_after_s)}
        return error_response(
            429, f"{error}; retry later", None, getattr(request.state, "request_id", None), headers
        )

    @app.exception_handler(QueueUnavailable)
    async def queue_unavailable(request: Request, error: QueueUnavailable) -> JSONResponse:
        headers = {"Retry-After": str(settings.retry_after_s)}
        return error_response(
            503, f"{error}; retry later", None, getattr(request.state, "request_id", None), headers
        )

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, _: BodyTooLarge) -> JSONResponse:
        return error_response(
            413, f"request body is larger than the limit of {settings.max_body_bytes} bytes", "body"
        )

    @app.exception_handler(RequestValidationError)
    async def validationerror_response(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if isinstance(error.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
            return await body_too_large(request, error.__cause__)
        return error_response(
            error.status_code, str(error.detail), None, None, getattr(error, "headers", None)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        LOG.exception("unexpected error on %s", request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); see the server log")


def exception_response(error: Exception, request_id: str | None, settings: Settings) -> JSONResponse | None:
    """The answer ``install_error_handlers`` gives ``error``, for code outside FastAPI (the fast path).

    ``None`` for ``BodyTooLarge``, which the body-limit middleware answers itself.
    """
    retry = {"Retry-After": str(settings.retry_after_s)}
    if isinstance(error, BodyTooLarge):
        return None
    if isinstance(error, InputError | ServiceError):
        return error_response(error.status, error.message, error.field, request_id)
    if isinstance(error, ModelNotFound):
        return error_response(404, str(error.args[0]), "model", request_id)
    if isinstance(error, QueueFull):
        return error_response(429, f"{error}; retry later", None, request_id, retry)
    if isinstance(error, QueueUnavailable):
        return error_response(503, f"{error}; retry later", None, request_id, retry)
    if isinstance(error, RequestValidationError):
        return _validation_response(error)
    LOG.exception("unexpected error on the fast path", exc_info=error)
    return error_response(500, f"internal error ({type(error).__name__}); see the server log")


def _validation_response(error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        position = first.get("loc", ("body", "?"))[-1]
        return error_response(422, f"body is not valid JSON (near character {position})", "body")
    return error_response(422, str(first.get("msg")), field_of(tuple(first.get("loc", ()))))
