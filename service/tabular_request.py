"""The body of ``POST /score/tabular``, parsed with orjson and checked without copying the rows.

Pydantic (``TabularRequest``) checks the small fields (``model``, ``version``, ``threshold``,
``timeout_s``, no unknown keys), so their errors read as before; ``rows`` is handed as parsed
to ``validate_tabular_rows``, which turns it into one float32 array at C speed and names the
offending ``rows[i][j]``. Bodies orjson refuses go to ``json.loads``, which accepts the
non-standard ``NaN`` / ``Infinity`` literals: such values then fail row validation with the
field named (orjson parses a 64 × 30 body in 0.14 ms, ``json.loads`` in 1.5 ms).

Refused with a 422 naming ``body``, never a 500: bodies nested deeper than the parsers allow
(orjson stops at 1024 levels, ``json.loads`` raises ``RecursionError`` near 1000), and objects
with a duplicate key (orjson silently keeps the last one; see ``_has_duplicate_keys``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.errors import InputError
from service.schemas import TabularRequest


@dataclass(frozen=True)
class TabularCall:
    """A parsed tabular request; ``rows`` is still the parsed JSON (validated by the scoring)."""

    model: str
    version: str | None
    rows: Any
    threshold: float | None
    timeout_s: float | None
    fpr: float | None = None
    fdr: float | None = None


def _duplicate_refusing_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InputError("body", f"duplicate key {key[:40]!r} in a JSON object")
        result[key] = value
    return result


def _loads_exact(body: bytes) -> Any:
    """``json.loads`` refusing duplicate keys; ``NaN``/``Infinity`` parse here and are refused later."""
    try:
        return json.loads(body, object_pairs_hook=_duplicate_refusing_hook)
    except RecursionError:
        raise InputError("body", "JSON is nested too deeply (about 1000 levels at most)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f" (near character {error.pos})" if isinstance(error, json.JSONDecodeError) else ""
        raise InputError("body", f"body is not valid JSON{where}") from None


def _parsed_keys(data: Any) -> int:
    """Keys orjson kept in the top-level object and in row objects (the places objects belong)."""
    count = len(data) if isinstance(data, dict) else 0
    rows = data.get("rows") if isinstance(data, dict) else None
    if isinstance(rows, list):
        count += sum(len(row) for row in rows if type(row) is dict)
    return count


def _has_duplicate_keys(body: bytes, data: Any) -> bool:
    """Whether some JSON object in ``body`` repeats a key, without re-parsing ordinary bodies.

    Every key is followed by exactly one ``:`` outside strings, and a ``:`` outside strings is
    always a key's, so ``body.count(b":") ≥`` keys written ``≥`` keys orjson kept. When the
    colon count equals the keys kept (the common case: rows are lists, or objects without
    nested objects, and no string holds a colon), no key repeats. Otherwise the body is
    parsed once more by ``json.loads`` with a hook that refuses a repeated key.
    """
    if body.count(b":") == _parsed_keys(data):
        return False
    _loads_exact(body)  # raises InputError naming the duplicate key, if there is one
    return False


def parse_json(body: bytes) -> Any:
    """orjson, falling back to ``json.loads`` (NaN/Infinity literals); 422 naming ``body`` otherwise.

    Deep nesting and duplicate keys are refused (422, field ``body``).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _loads_exact(body)
    if _has_duplicate_keys(body, data):  # pragma: no cover - _has_duplicate_keys raises instead
        raise InputError("body", "duplicate key in a JSON object")
    return data


def parse_tabular_request(body: bytes) -> TabularCall:
    """Parse and check a tabular body; errors name the field (``RequestValidationError``/``InputError``)."""
    data = parse_json(body)
    if not isinstance(data, dict):
        raise InputError("body", f"must be a JSON object with model and rows, got {type(data).__name__}")
    plain = _plain_call(data)
    if plain is not None:
        return plain
    fields = {key: value for key, value in data.items() if key != "rows"}
    if "rows" in data:
        fields["rows"] = []  # rows are checked by validate_tabular_rows, not copied by pydantic
    try:
        checked = TabularRequest.model_validate(fields)
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        ) from None
    return TabularCall(
        checked.model,
        checked.version,
        data["rows"],
        checked.threshold,
        checked.timeout_s,
        checked.fpr,
        checked.fdr,
    )


_KEYS = frozenset(("model", "version", "rows", "threshold", "timeout_s", "fpr", "fdr"))
_NUMBERS = (int, float)  # ``bool`` is not among them (``type(True) is bool``)


def _finite_number(value: Any) -> float | None:
    """``float(value)`` for a plain finite int / float, else ``None`` (pydantic then answers)."""
    if type(value) not in _NUMBERS:
        return None
    try:  # float() of a huge int overflows
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _plain_call(data: dict[str, Any]) -> TabularCall | None:
    """The call when every small field is plainly valid, else ``None`` (pydantic then names the error).

    ``TabularRequest.model_validate`` was a quarter of the API's CPU per one-row request under
    load (py-spy); these are the checks it makes for such bodies, in a few attribute lookups.
    """
    if "rows" not in data or not _KEYS.issuperset(data) or type(data.get("model")) is not str:
        return None
    version = data.get("version")
    if version is not None and type(version) is not str:
        return None
    numbers: dict[str, float | None] = {}
    for key in ("threshold", "timeout_s", "fpr", "fdr"):
        value = data.get(key)
        numbers[key] = None if value is None else _finite_number(value)
        if value is not None and numbers[key] is None:
            return None
    timeout_s = numbers["timeout_s"]
    if timeout_s is not None and not 0 < timeout_s <= 300:
        return None
    return TabularCall(
        data["model"], version, data["rows"], numbers["threshold"], timeout_s, numbers["fpr"], numbers["fdr"]
    )
