"""Compact wire format for jobs and results on the queue: a JSON header plus raw array bytes.

Layout: ``uint32 header length (little endian) | header JSON | array bytes …``. The header
holds plain fields and, under ``"arrays"``, each array's name, dtype and shape. Hand-written
rather than ``np.savez`` (a zip archive per message) or pickle (unsafe to load from a queue).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from service.errors import CodecError

_LENGTH = struct.Struct("<I")
_ALLOWED_DTYPES = {"float32", "uint8", "float64", "int64"}
# ``str(dtype)`` and ``np.dtype(name)`` cost microseconds each (numpy builds the name in
# Python); a message carries up to six arrays and a one-row request two messages.
_DTYPES = {name: np.dtype(name) for name in _ALLOWED_DTYPES}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}



def encode(fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Pack JSON-serialisable ``fields`` and named ``arrays`` into one bytes message."""
    specs = []
    chunks = []
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        dtype = _NAMES.get(data.dtype) or str(data.dtype)
        specs.append({"name": name, "dtype": dtype, "shape": list(data.shape)})
        chunks.append(data.tobytes())
    header = orjson.dumps({**fields, "arrays": specs})
    return b"".join([_LENGTH.pack(len(header)), header, *chunks])


def decode(message: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of ``encode``; ``CodecError`` on anything malformed (never unpickles)."""
    try:
        (length,) = _LENGTH.unpack_from(message, 0)
        header = orjson.loads(message[_LENGTH.size : _LENGTH.size + length])
        offset = _LENGTH.size + length
        arrays: dict[str, np.ndarray] = {}
        for spec in header.pop("arrays"):
            dtype = _DTYPES.get(spec["dtype"])
            if dtype is None:
                raise CodecError(f"array dtype {spec['dtype']!r} is not allowed")
            shape = tuple(int(size) for size in spec["shape"])
            count = 1
            for size in shape:
                if size < 0:
                    raise CodecError(f"array shape {list(shape)} has a negative size")
                count *= size
            end = offset + count * dtype.itemsize
            if end > len(message):
                raise CodecError("message is shorter than its header says")
            arrays[spec["name"]] = np.frombuffer(message, dtype=dtype, count=count, offset=offset).reshape(
                shape
            )
            offset = end
    except CodecError:
        raise
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CodecError(f"malformed queue message ({error})") from error
    return header, arrays
