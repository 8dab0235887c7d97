"""Image decoding and resizing for the service, with Pillow only.

Accepts PNG, JPEG, BMP and TIFF; refuses other formats, truncated files and decompression
bombs (the pixel count declared in the header is checked before any pixel is decoded).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from service.errors import InputError

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger than any inspection camera frame we expect
PIL_MODES = {"rgb": "RGB", "grayscale": "L"}

# Truncated files must fail, not decode as grey padding; this is Pillow's default, set explicitly.
ImageFile.LOAD_TRUNCATED_IMAGES = False
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


def _to_mode(image: Image.Image, color_mode: str) -> Image.Image:
    """Convert to ``L`` or ``RGB``; 16-bit greyscale keeps its 8 most significant bits."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # Pillow's I;16 -> L conversion clips at 255; scale instead so 16-bit sensors keep contrast.
        wide = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") else 24
        image = Image.fromarray((wide >> shift).astype(np.uint8), mode="L")
    return image.convert(PIL_MODES[color_mode])


def decode_image(
    data: bytes, color_mode: str, field: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode image bytes into uint8 ``[H, W, C]`` in the model's colour mode (``rgb``/``grayscale``).

    Raises ``InputError`` naming ``field`` for empty data, other formats (GIF, WebP, text …),
    headers declaring more than ``max_pixels`` pixels, and truncated or corrupt files.
    """
    if not data:
        raise InputError(field, "is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    field,
                    f"declares {width}x{height} pixels, more than the limit of {max_pixels} pixels",
                    413,
                )
            image.load()
            converted = _to_mode(image, color_mode)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(field, f"is too large to decode ({error})", 413) from error
    except UnidentifiedImageError as error:
        raise InputError(field, f"is not a PNG, JPEG, BMP or TIFF image ({len(data)} bytes)", 415) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(field, f"cannot be decoded: truncated or corrupt ({error})") from error
    array = np.asarray(converted, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


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
_INFERNO_LUT = np.round(
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


def heatmap_png(anomaly_map: np.ndarray, low: float, high: float) -> bytes:
    """PNG heat map: ``(value - low) / (high - low)`` clipped to [0, 1], in inferno colours (256 levels)."""
    span = max(high - low, 1e-12)
    unit = (np.asarray(anomaly_map, dtype=np.float32) - low) * np.float32(255.0 / span) + np.float32(0.5)
    levels = np.clip(np.nan_to_num(unit, nan=0.0), 0.0, 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(_INFERNO_LUT[levels], mode="RGB").save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )
    return buffer.getvalue()
