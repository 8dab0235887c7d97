"""Errors the service turns into clear HTTP answers (never a traceback)."""

from __future__ import annotations


class InputError(ValueError):
    """A request field is wrong; ``field`` names it (e.g. ``rows[3][5]``), ``status`` is the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class BundleError(RuntimeError):
    """A model bundle is missing, malformed or fails its checksum; it is refused, never half-loaded."""


class ModelNotFound(LookupError):
    """No loaded model (or version) has the requested name."""
