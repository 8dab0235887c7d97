"""Shared helpers for the image tests: a few real Magnetic Tile images at a tiny size."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

from tests.conftest import MAGNETIC_TILE_DIR, data_path

TINY_SIZE = (64, 96)  # H x W: not square on purpose


def magnetic_tile() -> Path:
    """The real Magnetic Tile category (MVTec layout); skips the test when the data is absent."""
    return data_path(MAGNETIC_TILE_DIR)


def tiny_images(count: int = 4, size: tuple[int, int] = TINY_SIZE) -> torch.Tensor:
    """``count`` real training images as uint8 ``[N, H, W, 3]``."""
    from training.image.data import load_category, load_images

    category = load_category(magnetic_tile())
    return load_images(category.train[:count], size)


def defective_paths(count: int) -> list[Path]:
    """The first ``count`` defective test images."""
    from training.image.data import load_category

    category = load_category(magnetic_tile())
    return [p for p, label in zip(category.test, category.test_labels, strict=True) if label][:count]


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width × height`` RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def png_with_rows(width: int, height: int, rows: int) -> bytes:
    """A valid-looking RGB PNG declaring ``width × height`` whose zlib stream holds only ``rows`` rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xc8" * (3 * width) for _ in range(rows))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body
