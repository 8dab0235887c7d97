"""Validation of model inputs; every error names the offending field, row and column."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

from service.bundles.manifest import Manifest
from service.errors import InputError

_NUMBER_TYPES = (int, float)  # ``bool`` is refused on purpose (``True`` is not a measurement)


def _check_value(value: Any, where: str) -> None:
    if type(value) not in _NUMBER_TYPES and not isinstance(value, np.integer | np.floating):
        raise InputError(where, f"must be a number, got {type(value).__name__} {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise InputError(where, f"must be finite, got {value!r}")


def _row_values(row: Any, index: int, manifest: Manifest, field: str) -> Sequence[Any]:
    where = f"{field}[{index}]"
    if isinstance(row, dict):
        names = manifest.feature_names
        missing = [name for name in names if name not in row]
        if missing:
            raise InputError(where, f"missing feature(s) {missing[:5]}; expected keys {names[:5]}…")
        unknown = [key for key in row if key not in set(names)]
        if unknown:
            raise InputError(where, f"unknown feature(s) {unknown[:5]}")
        values = [row[name] for name in names]
        for name, value in zip(names, values, strict=True):
            _check_value(value, f"{where}.{name}")
        return values
    if not isinstance(row, list | tuple):
        raise InputError(
            where, f"must be a list of {manifest.features} numbers or an object keyed by feature name"
        )
    if len(row) != manifest.features:
        raise InputError(where, f"has {len(row)} values, model {manifest.name!r} expects {manifest.features}")
    for column, value in enumerate(row):
        _check_value(value, f"{where}[{column}]")
    return row


def _fast_rows(rows: list | tuple, features: int) -> np.ndarray | None:
    """Lists of exactly ``features`` ints/floats → float64 array at C speed; ``None`` otherwise."""
    if not all(type(row) is list and len(row) == features for row in rows):
        return None
    if not set(map(type, chain.from_iterable(rows))) <= {int, float}:  # map/chain: no Python loop
        return None
    return np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * features).reshape(-1, features)


def validate_tabular_rows(rows: Any, manifest: Manifest, field: str = "rows") -> np.ndarray:
    """Rows (lists of numbers, or objects keyed by feature name) → float32 ``[N, F]``.

    Refuses (``InputError``) an empty or non-list ``rows``, a wrong feature count, missing or
    unknown feature names, non-numbers (strings, booleans, null) and NaN/±Inf, naming the
    first offending ``rows[i][j]`` or ``rows[i].name``. Values that overflow float32 are
    refused as non-finite too.
    """
    if manifest.kind != "tabular":
        raise InputError("model", f"model {manifest.name!r} is an image model; use /score/image")
    if isinstance(rows, np.ndarray):
        array = rows
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != manifest.features:
            raise InputError(field, f"must have shape [N>0, {manifest.features}], got {list(array.shape)}")
        real = array.dtype == np.float32 or (  # float32: what the API sends the worker
            np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)
        )
        if not real:
            raise InputError(field, f"must be real numbers, got dtype {array.dtype}")
    else:
        if not isinstance(rows, list | tuple):
            raise InputError(field, "must be a list of rows")
        if len(rows) == 0:
            raise InputError(field, "is empty: send at least one row")
        array = _fast_rows(rows, manifest.features)
        if array is None:  # objects, or something wrong: the row-by-row path names the culprit
            array = np.asarray(
                [_row_values(row, index, manifest, field) for index, row in enumerate(rows)], dtype=np.float64
            )
    if array.dtype == np.float32:
        result = array
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            result = array.astype(np.float32)
    if not np.isfinite(result).all():
        bad = ~np.isfinite(result)
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{field}[{row}][{column}]", f"must be finite in float32, got {array[row, column]!r}"
        )
    return np.ascontiguousarray(result)


def validate_image_batch(images: np.ndarray, manifest: Manifest, field: str = "images") -> np.ndarray:
    """Check a uint8 ``[N, H, W, C]`` batch against an image manifest; returns it contiguous."""
    if manifest.kind != "image":
        raise InputError("model", f"model {manifest.name!r} is a tabular model; use /score/tabular")
    height, width = manifest.image_size
    expected = (height, width, manifest.channels)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise InputError(field, "must be a uint8 array")
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1:] != expected:
        raise InputError(
            field, f"must have shape [N>0, {height}, {width}, {manifest.channels}], got {list(images.shape)}"
        )
    return np.ascontiguousarray(images)
