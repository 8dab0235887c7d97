"""Image decoding for the service: accepted formats, refusals (bombs, truncation), resizing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import InputError
from service.images import (
    INFERNO_LUT,
    decode_for_model,
    decode_image,
    heat_levels,
    heatmap_png,
    palette_png,
    resize_for_model,
    resize_map,
)
from tests.conftest import MAGNETIC_TILE_DIR, data_path
from tests.image_support import png_header_only, png_with_rows

pytestmark = pytest.mark.timeout(60)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tile() -> Image.Image:
    """A real magnetic-tile image (first training image)."""
    path = sorted((data_path(MAGNETIC_TILE_DIR) / "train" / "good").iterdir())[0]
    return Image.open(path).convert("RGB")


@pytest.mark.parametrize(
    ("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 95}), ("BMP", {}), ("TIFF", {})]
)
def test_supported_formats_decode_to_the_model_colour_mode(
    tile: Image.Image, fmt: str, options: dict
) -> None:
    data = encode(tile, fmt, **options)
    rgb = decode_image(data, "rgb")
    grey = decode_image(data, "grayscale")
    assert rgb.shape == (tile.height, tile.width, 3) and rgb.dtype == np.uint8
    assert grey.shape == (tile.height, tile.width, 1)
    if fmt != "JPEG":  # lossless formats give the exact pixels back
        np.testing.assert_array_equal(rgb, np.asarray(tile))


def test_sixteen_bit_tiff_keeps_its_contrast() -> None:
    values = np.array([[0, 256, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "TIFF")
    assert decode_image(data, "grayscale")[0, :, 0].tolist() == [0, 1, 255]


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 422, "is empty"),
        (b"hello, this is text and not an image", 415, "not a PNG, JPEG, BMP or TIFF"),
        (None, 415, "not a PNG, JPEG, BMP or TIFF"),  # a GIF
    ],
)
def test_non_images_are_refused(data: bytes | None, status: int, words: str) -> None:
    if data is None:
        data = encode(Image.new("P", (8, 8)), "GIF")
    with pytest.raises(InputError) as caught:
        decode_image(data, "rgb", field="images[0]")
    assert (
        caught.value.status == status and words in caught.value.message and caught.value.field == "images[0]"
    )


def test_truncated_image_is_refused(tile: Image.Image) -> None:
    data = encode(tile, "PNG")
    with pytest.raises(InputError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], "rgb")


def test_decompression_bomb_is_refused_from_its_header() -> None:
    """50,000 × 50,000 declared: refused with 413 before any pixel is decoded (the file is tiny)."""
    data = png_header_only(50_000, 50_000)
    assert len(data) < 200
    with pytest.raises(InputError) as caught:
        decode_image(data, "rgb")
    assert caught.value.status == 413 and "2500000000 pixels" in caught.value.message


def test_resize_round_trip_keeps_alignment() -> None:
    """A bright square in the input lands in the same place of the map resized back."""
    image = np.zeros((300, 200, 1), dtype=np.uint8)
    image[30:90, 140:190] = 255
    small = resize_for_model(image, 64, 64)
    assert small.shape == (64, 64, 1)
    back = resize_map(small[:, :, 0].astype(np.float32), 300, 200)
    assert back.shape == (300, 200)
    assert back[60, 165] > 200 and back[200, 50] < 1
    assert resize_for_model(image, 300, 200) is image


def test_heatmap_png_has_the_map_size() -> None:
    values = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    decoded = Image.open(io.BytesIO(heatmap_png(values, 0.0, 1.0)))
    assert decoded.format == "PNG" and decoded.size == (40, 30) and decoded.mode == "P"
    pixels = np.asarray(decoded.convert("RGB"))
    assert pixels[0, 0].sum() < pixels[-1, -1].sum()  # cold start, hot end
    levels = np.asarray(decoded)  # the palette index is the level of the value
    assert levels[0, 0] == 0 and levels[-1, -1] == 255 and np.all(np.diff(levels.ravel()) >= 0)


def test_the_hand_written_png_decodes_to_its_levels_and_colours_exactly() -> None:
    """``palette_png`` (Sub-filtered rows, one zlib stream) holds exactly the levels it was given,
    in the colours of the inferno table."""
    rng = np.random.default_rng(3)
    for height, width in ((96, 128), (321, 511), (1, 1), (2, 1)):
        levels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
        decoded = Image.open(io.BytesIO(palette_png(levels)))
        decoded.load()
        assert decoded.mode == "P" and decoded.size == (width, height)
        np.testing.assert_array_equal(np.asarray(decoded), levels)
        np.testing.assert_array_equal(np.asarray(decoded.convert("RGB")), INFERNO_LUT[levels])


def test_heat_levels_clip_and_send_nan_to_the_coldest_level() -> None:
    values = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(heat_levels(values, 0.0, 1.0), [[0, 0, 128, 255, 255, 0]])


def test_images_over_the_configured_pixel_limit_are_refused(tile: Image.Image) -> None:
    data = encode(tile, "PNG")
    with pytest.raises(InputError) as caught:
        decode_image(data, "rgb", max_pixels=tile.width * tile.height - 1)
    assert caught.value.status == 413
    assert f"declares {tile.width}x{tile.height} pixels" in caught.value.message


def test_a_png_whose_pixel_data_ends_early_is_refused_not_padded() -> None:
    """Pillow pads such a file silently (defect 4 of issue 13); the stream length check refuses it."""
    data = png_with_rows(3000, 3000, 1)
    assert len(data) < 200
    Image.open(io.BytesIO(data)).load()  # Pillow alone accepts it: the check is what refuses it
    with pytest.raises(InputError) as caught:
        decode_image(data, "rgb", field="images[0]")
    assert caught.value.status == 422 and caught.value.field == "images[0]"
    assert "holds 9001 of the 27003000 bytes its 3000x3000 header requires" in caught.value.message
    complete = png_with_rows(300, 20, 20)
    assert decode_image(complete, "rgb").shape == (20, 300, 3)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
def test_complete_pngs_of_every_colour_type_pass_the_length_check(tile: Image.Image, mode: str) -> None:
    small = tile.resize((37, 29))
    image = small.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(small.convert("L"), dtype=np.uint16) * 257
    )
    assert decode_image(encode(image, "PNG"), "grayscale").shape == (29, 37, 1)


def test_large_jpegs_are_draft_decoded_near_the_model_size(tile: Image.Image) -> None:
    """A 3000 × 2000 JPEG for a 64 × 64 model: libjpeg decodes at 1/4 scale (≥ 4 × 64 per side kept).

    The resized pixels differ from a full decode by a few grey levels at most; the original
    size (for the anomaly map) is the file's.
    """
    big = encode(tile.resize((3000, 2000), Image.Resampling.BILINEAR), "JPEG", quality=95)
    drafted = decode_image(big, "rgb", draft_to=(256, 256))
    assert drafted.shape == (500, 750, 3)  # 1/4 scale: 1/8 would leave 250 < 256 rows
    original, pixels = decode_for_model(big, "rgb", 64, 64)
    full = resize_for_model(decode_image(big, "rgb"), 64, 64)
    difference = np.abs(pixels.astype(int) - full.astype(int))
    assert original == (2000, 3000) and pixels.shape == (64, 64, 3)
    assert difference.mean() < 2.0 and difference.max() <= 16, (difference.mean(), difference.max())
    small = encode(tile, "JPEG", quality=95)  # a tile is < 8 × 64 per side: decoded in full, as in training
    np.testing.assert_array_equal(
        decode_for_model(small, "rgb", 64, 64)[1], resize_for_model(decode_image(small, "rgb"), 64, 64)
    )


def test_the_default_pixel_limit_is_16_megapixels() -> None:
    with pytest.raises(InputError) as caught:
        decode_image(png_header_only(4001, 4000), "rgb")
    assert caught.value.status == 413 and "more than the limit of 16000000 pixels" in caught.value.message
