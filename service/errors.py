"""Every exception the service (and the bundle contract it shares with ``training``) raises.

Defined here, once, and raised where the failure happens; ``service.http_errors`` turns each
into the one error shape ``{"error": {"field", "message"}, "request_id"}`` (never a traceback).

Raised by → answered as:

- ``InputError``: request parsing and checks → its ``status`` (422, 413, 415), naming ``field``;
- ``ServiceError``: ``ScoringService`` (worker failures, deadlines, reloads) → its ``status``;
- ``ModelNotFound``: the catalogs → 404 naming ``model``;
- ``QueueFull``: a queue at ``max_queue_depth`` → 429 with ``Retry-After``;
- ``QueueUnavailable``: the Redis queue with Redis down → 503 with ``Retry-After``;
- ``BodyTooLarge``: ``BodySizeLimit``, inside ``receive`` → 413 naming ``body``;
- ``ClientDisconnected``: the tabular fast path → nothing (the client is gone);
- ``BundleError``: the bundle loader → the bundle is refused (``GET /models`` lists it);
- ``ContractError``: ``service.contract``'s checks → wrapped by the loader and the exporter;
- ``CalibrationError``: ``service.calibration`` → wrapped (``BundleError``, 503, ``InputError``);
- ``CodecError``: the queue's wire format → a bad job is dead-lettered, a bad reply logged.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request field is wrong; ``field`` names it (e.g. ``rows[3][5]``), ``status`` is the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class ServiceError(Exception):
    """A non-input failure with its HTTP status (404, 500, 504 …)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class ModelNotFound(LookupError):
    """No loaded model (or version) has the requested name."""


class QueueFull(RuntimeError):
    """The model's queue holds ``max_depth`` entries already (answer 429 with Retry-After)."""


class QueueUnavailable(RuntimeError):
    """The queue backend (Redis) does not answer (answer 503 with Retry-After)."""


class BodyTooLarge(Exception):
    """Raised inside ``receive`` when a streamed body passes the limit."""


class ClientDisconnected(Exception):
    """The client went away before its body arrived (nothing to answer)."""


class BundleError(RuntimeError):
    """A model bundle is missing, malformed or fails its checksum; it is refused, never half-loaded."""


class ContractError(ValueError):
    """A manifest or name breaks the bundle contract (``service.contract``); the message names the key."""


class CalibrationError(ValueError):
    """Calibration data that cannot be used (too few, non-finite, malformed)."""


class CodecError(ValueError):
    """A message on the queue is not in the expected format."""
