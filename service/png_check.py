"""Detect PNGs whose compressed pixel data ends early (Pillow decodes those silently, padding rows).

Pillow raises for a file cut inside a chunk, but when the zlib stream of the ``IDAT`` chunks
is complete and simply holds fewer rows than the header declares (a 100-byte file declaring
6000 × 6000), its decoder stops at the end of the stream and the image is padded. Here the
``IDAT`` data is inflated (in 1 MiB steps, nothing kept) and its length compared with what
the header requires: ``Σ_passes rows × (1 + ⌈columns × bits per pixel / 8⌉)`` (one filter byte
per row; Adam7 interlacing has 7 passes). Hand-written: no library in our stack checks this.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
STEP = 1 << 20


def expected_pixel_bytes(width: int, height: int, bit_depth: int, colour_type: int, interlace: int) -> int:
    """Bytes of filtered scanlines the header requires (what the IDAT stream must inflate to)."""
    bits = bit_depth * CHANNELS.get(colour_type, 4)
    if not interlace:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in ADAM7:
        columns = (width - x0 + dx - 1) // dx if width > x0 else 0
        rows = (height - y0 + dy - 1) // dy if height > y0 else 0
        if columns and rows:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def png_shortfall(data: bytes) -> str | None:
    """``None`` when the PNG's pixel data is complete, else a sentence saying what is missing."""
    if not data.startswith(SIGNATURE):
        return None
    offset, header, idat = len(SIGNATURE), None, []
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        start = offset + 8
        if kind == b"IHDR" and length >= 13:
            header = struct.unpack_from(">IIBBBBB", data, start)
        elif kind == b"IDAT":
            idat.append(data[start : start + length])
        elif kind == b"IEND":
            break
        offset = start + length + 4
    if header is None:
        return "no IHDR header"
    width, height, bit_depth, colour_type, _, _, interlace = header
    expected = expected_pixel_bytes(width, height, bit_depth, colour_type, interlace)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for part in idat:
            chunk = inflater.decompress(part, STEP)
            produced += len(chunk)
            while inflater.unconsumed_tail and produced < expected:
                chunk = inflater.decompress(inflater.unconsumed_tail, STEP)
                produced += len(chunk)
            if produced >= expected:
                return None
        produced += len(inflater.flush())
    except zlib.error as error:
        return f"corrupt compressed pixel data: {error}"
    if produced >= expected:
        return None
    return (
        f"the pixel data holds {produced} of the {expected} bytes its {width}x{height} header requires"
    )
