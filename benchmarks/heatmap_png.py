"""The ``map=png`` heat map: the service's palette PNG against RGB PNGs of the same colours.

Each encoder gets the same anomaly map, resized to each image's size as the service resizes it
(``service.images.resize_map``), and is timed in one run, side by side:

- ``palette`` (the service): one byte per pixel, Sub-filtered rows, zlib level 1
  (``service.images.heatmap_png``);
- ``rgb hand-written``: the colours as three bytes per pixel, unfiltered rows, zlib level 1
  (what the service wrote before);
- ``rgb pillow``: the same RGB pixels saved by Pillow at ``compress_level=1`` (it tries the five
  row filters on every row).

The map is the demo image model's own map of ``--image`` when ``--bundle`` is given (smooth, as
real maps are), else a smooth synthetic map (a 12 × 16 random field upsampled to 96 × 128).

    python benchmarks/heatmap_png.py --bundle ~/.cache/usfad/demo/bundles/demo-image \\
        --image ../shared/data/images/magnetic_tile/train/good/exp1_num_10334.jpg
"""

from __future__ import annotations

import argparse
import io
import platform
import struct
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from service.images import (
    INFERNO_LUT,
    PNG_COMPRESS_LEVEL,
    decode_for_model,
    heat_levels,
    heatmap_png,
    png_chunk,
    resize_map,
)


def rgb_png_unfiltered(pixels: np.ndarray) -> bytes:
    """The previous encoder: RGB rows, filter None, one zlib stream at level 1."""
    height, width = pixels.shape[:2]
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 1:] = pixels.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), PNG_COMPRESS_LEVEL)
    chunks = [png_chunk(b"IHDR", header), png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def rgb_png_pillow(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def model_map(bundle_dir: Path, image: Path) -> np.ndarray:
    """The bundle's anomaly map of ``image`` at the model's size (ONNX Runtime, 1 thread)."""
    from service.bundles.bundle import load_bundle

    bundle = load_bundle(bundle_dir, device="cpu", threads=1)
    height, width = bundle.manifest.image_size
    _, pixels = decode_for_model(image.read_bytes(), bundle.manifest.color_mode, height, width)
    outputs = bundle.run(pixels[None])
    assert outputs.anomaly_map is not None, f"{bundle_dir} returns no anomaly map"
    return outputs.anomaly_map[0]


def synthetic_map(seed: int = 0) -> np.ndarray:
    field = np.random.default_rng(seed).random((12, 16)).astype(np.float32)
    return resize_map(field, 96, 128)


def per_call_ms(function: Callable[[], bytes], seconds: float) -> float:
    function()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        function()
        calls += 1
    return (time.perf_counter() - started) / calls * 1e3


def encoders(resized: np.ndarray) -> dict[str, Callable[[], bytes]]:
    """The three encoders of one resized map, as the service draws it (``low``/``high``: its range)."""
    low, high = float(resized.min()), float(resized.max())

    def rgb_pixels() -> np.ndarray:
        return np.take(INFERNO_LUT, heat_levels(resized, low, high), axis=0)

    return {
        "palette": lambda: heatmap_png(resized, low, high),
        "rgb hand-written": lambda: rgb_png_unfiltered(rgb_pixels()),
        "rgb pillow": lambda: rgb_png_pillow(rgb_pixels()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, help="an image bundle whose map of --image to encode")
    parser.add_argument("--image", type=Path, help="the image for --bundle")
    parser.add_argument("--sizes", default="96x128,321x511,1024x1280", help="map sizes HxW, comma-separated")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per encoder and size")
    args = parser.parse_args()
    if (args.bundle is None) != (args.image is None):
        parser.error("--bundle and --image go together")
    small = model_map(args.bundle, args.image) if args.bundle else synthetic_map()
    source = f"{args.bundle.name} map of {args.image.name}" if args.bundle else "synthetic smooth map"
    print(
        f"{source}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {args.seconds:g} s per cell"
    )
    print(
        "| map size | palette ms (KB) | rgb hand-written ms (KB) | rgb pillow ms (KB) "
        "| rgb hand-written ÷ palette: time / size |"
    )
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        height, width = (int(part) for part in size.split("x"))
        cells = encoders(resize_map(small, height, width))
        palette = np.asarray(Image.open(io.BytesIO(cells["palette"]())).convert("RGB"))
        rgb = np.asarray(Image.open(io.BytesIO(cells["rgb pillow"]())))
        assert np.array_equal(palette, rgb), "the palette PNG must show the RGB PNG's colours"
        measured = [(per_call_ms(encode, args.seconds), len(encode()) / 1024) for encode in cells.values()]
        row = [f"{height} × {width}", *(f"{ms:.2f} ({kb:.0f})" for ms, kb in measured)]
        (p_ms, p_kb), (r_ms, r_kb) = measured[:2]
        print("| " + " | ".join(row) + f" | {r_ms / p_ms:.2f}× / {r_kb / p_kb:.2f}× |")


if __name__ == "__main__":
    main()
