"""Image decoding and resizing for the service, with Pillow only.

Accepts PNG, JPEG, BMP and TIFF; refuses other formats, truncated files (a PNG whose pixel
data ends early, which Pillow would pad silently, is caught by ``service.png_check``) and
decompression bombs (the pixel count declared in the header is checked before any pixel is
decoded). The decoding cost is bounded: at most ``DEFAULT_MAX_PIXELS`` per image (and the
scorer's per-request total), and a JPEG much larger than the model's input is decoded at a
reduced scale by libjpeg (``Image.draft``), to a size still ``DRAFT_MARGIN`` × the model's.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from service.errors import InputError
from service.png_check import png_shortfall

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 16_000_000  # 16 MP per image, e.g. 4000 x 4000 or a 5472 x 2920 camera frame
DRAFT_MARGIN = 4  # a JPEG is draft-decoded only to a size still >= 4x the model's input per side
PIL_MODES = {"rgb": "RGB", "grayscale": "L"}

# Truncated files must fail, not decode as grey padding; this is Pillow's default, set explicitly.
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = 256_000_000  # backstop only: `max_pixels` (configurable) is checked per call


def _to_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Convert to ``L`` or ``RGB``; 16-bit greyscale keeps its 8 most significant bits."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # Pillow's I;16 -> L conversion clips at 255; scale instead so 16-bit sensors keep contrast.
        wide = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") else 24
        image = Image.fromarray((wide >> shift).astype(np.uint8), mode="L")
    return image.convert(PIL_MODES[color_mode])


def open_image(data: bytes, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read only the header: format allow-list (415), declared pixels (413), empty data (422)."""
    if not data:
        raise InputError(field, "is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(field, f"is too large to decode ({error})", 413) from error
    except UnidentifiedImageError as error:
        raise InputError(field, f"is not a PNG, JPEG, BMP or TIFF image ({len(data)} bytes)", 415) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(field, f"cannot be decoded: truncated or corrupt ({error})") from error
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(
            field, f"declares {width}x{height} pixels, more than the limit of {max_pixels} pixels", 413
        )
    return image


def decode_image(
    data: bytes,
    color_mode: str,
    field: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode image bytes into uint8 ``[H, W, C]`` in the model's colour mode (``rgb``/``grayscale``).

    Raises ``InputError`` naming ``field`` for empty data, other formats (GIF, WebP, text …),
    headers declaring more than ``max_pixels`` pixels, and truncated or corrupt files.
    ``draft_to`` (``(height, width)``): let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8
    scale, keeping at least that size (other formats ignore it).
    """
    image = open_image(data, field, max_pixels)
    if image.format == "PNG" and (shortfall := png_shortfall(data)) is not None:
        raise InputError(field, f"cannot be decoded: truncated or corrupt ({shortfall})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_to is not None and image.format == "JPEG":
                image.draft(PIL_MODES[color_mode], (draft_to[1], draft_to[0]))
            image.load()
            converted = _to_mode(image, color_mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(field, f"is too large to decode ({error})", 413) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(field, f"cannot be decoded: truncated or corrupt ({error})") from error
    array = np.asarray(converted, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decode_for_model(
    data: bytes,
    color_mode: str,
    height: int,
    width: int,
    field: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[tuple[int, int], np.ndarray]:
    """``((original height, width), uint8 [height, width, C])``: decode, then resize for the model.

    A JPEG larger than ``DRAFT_MARGIN`` × 2 the model's input on both sides is decoded by
    libjpeg at a reduced scale that keeps at least ``DRAFT_MARGIN`` × the input size, which
    cuts the decoding cost by up to 64×; the original size (for the anomaly map) is the file's.
    """
    image = open_image(data, field, max_pixels)
    original = (image.height, image.width)
    pixels = decode_image(data, color_mode, field, max_pixels, (DRAFT_MARGIN * height, DRAFT_MARGIN * width))
    return original, resize_for_model(pixels, height, width)


def resize_for_model(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``[h, w, C]`` to ``[height, width, C]`` with Pillow's bilinear filter.

    Convert first, then resize with ``Image.BILINEAR``: the same steps as training's
    ``training.image.data.read_image``, so served pixels equal training pixels.
    """
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[2]
    source = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    resized = np.asarray(source.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return resized[:, :, None] if resized.ndim == 2 else resized


def resize_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize a float ``[h, w]`` anomaly map to the original ``[height, width]``."""
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape == (height, width):
        return anomaly_map
    resized = Image.fromarray(anomaly_map, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


# Five anchors of matplotlib's "inferno" colour map, interpolated linearly. Hand-written so
# the serving processes need not import matplotlib (footprint); 5 anchors are enough for a heat map.
_INFERNO_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


# The colour map sampled at 256 levels: one table lookup per pixel instead of three ``np.interp``
# calls (a PNG channel holds 256 levels anyway; colours differ from exact interpolation by at most 2).
INFERNO_LUT = np.round(
    np.stack(
        [
            np.interp(np.linspace(0.0, 1.0, 256), np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS)), channel)
            for channel in _INFERNO_ANCHORS.T
        ],
        axis=-1,
    )
).astype(np.uint8)
# zlib level 1: the heat map was the API's largest cost per image at the default level 6, for a
# PNG about 5% smaller (py-spy, docs/serving-speed.md).
PNG_COMPRESS_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_SUB = 1  # each byte stored as its difference to the byte on its left (mod 256)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_INFERNO_PLTE = png_chunk(b"PLTE", INFERNO_LUT.tobytes())


def palette_png(levels: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """An 8-bit palette PNG of ``uint8 [h, w]`` levels in inferno colours (index = level).

    Hand-written rather than Pillow's ``save``: a palette image holds one byte per pixel where
    RGB holds three, and the Sub filter turns a smooth map into runs of small differences, so
    zlib has a third of the bytes to compress: for the demo model's map of a Magnetic Tile image
    at 511 × 321, 1.5 ms and 33 KB against 2.7 ms and 71 KB for the RGB PNG of the same colours
    (``benchmarks/heatmap_png.py``, docs/serving-speed.md).
    Decoded, the pixel indices are the levels ``round(255 (value - low) / (high - low))``;
    ``Image.convert("RGB")`` gives the colours.
    """
    levels = np.ascontiguousarray(levels, dtype=np.uint8)
    height, width = levels.shape
    rows = np.empty((height, 1 + width), dtype=np.uint8)
    rows[:, 0] = PNG_FILTER_SUB
    rows[:, 1] = levels[:, 0]
    np.subtract(levels[:, 1:], levels[:, :-1], out=rows[:, 2:])  # uint8: wraps mod 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8 bits, palette, no interlace
    return b"".join(
        [
            _PNG_SIGNATURE,
            png_chunk(b"IHDR", header),
            _INFERNO_PLTE,
            png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            png_chunk(b"IEND", b""),
        ]
    )


def heat_levels(anomaly_map: np.ndarray, low: float, high: float) -> np.ndarray:
    """``uint8`` levels ``round(255 (value - low) / (high - low))``, clipped to [0, 255]; NaN → 0."""
    span = max(high - low, 1e-12)
    unit = (np.asarray(anomaly_map, dtype=np.float32) - low) * np.float32(255.0 / span) + np.float32(0.5)
    return np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 255.0).astype(np.uint8)


def heatmap_png(anomaly_map: np.ndarray, low: float, high: float) -> bytes:
    """PNG heat map: ``(value - low) / (high - low)`` clipped to [0, 1], in inferno colours (256 levels)."""
    return palette_png(heat_levels(anomaly_map, low, high))
