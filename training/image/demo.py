"""A synthetic MVTec-layout category and a small USF model trained on it (``usfad serve --demo``).

Everything is generated in code (no downloads): each image shows a textured metal "part" (a
rounded plate with brushed stripes and noise) on a dark background, jittered in position and
brightness. Defective test images carry a dark scratch or a bright spot, with pixel masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_CATEGORY = "demo_parts"
DEMO_SIZE = (96, 128)  # (H, W) of the generated images
DEFECTS = ("scratch", "spot")


def _part(rng: np.random.Generator) -> np.ndarray:
    """One defect-free part, RGB uint8 ``[H, W, 3]``."""
    height, width = DEMO_SIZE
    rows, cols = np.mgrid[0:height, 0:width]
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (cols + rng.uniform(0, 8)) / 8.0)
    texture = 150 + 40 * stripes + rng.normal(0, 6, (height, width))
    texture *= rng.uniform(0.92, 1.08)
    plate = Image.new("L", (width, height), 0)
    dx, dy = rng.integers(-4, 5, size=2)
    ImageDraw.Draw(plate).rounded_rectangle(
        (14 + dx, 12 + dy, width - 14 + dx, height - 12 + dy), radius=14, fill=255
    )
    inside = np.asarray(plate) > 0
    gray = np.where(inside, texture, 25 + rng.normal(0, 3, (height, width)))
    tint = np.array([1.0, 0.97, 0.92])
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def _defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw a defect of ``kind`` on the part; returns (image, 0/255 mask)."""
    height, width = DEMO_SIZE
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = int(rng.integers(40, width - 40)), int(rng.integers(30, height - 30))
    if kind == "scratch":
        length = int(rng.integers(26, 40))
        angle = rng.uniform(0, np.pi)
        end = (cx + int(length * np.cos(angle)), cy + int(length * np.sin(angle)))
        draw.line((cx, cy, *end), fill=255, width=4)
        value = 20
    else:
        radius = int(rng.integers(6, 10))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        value = 250
    region = np.asarray(mask) > 0
    out = image.copy()
    out[region] = value
    return out, np.asarray(mask)


def write_demo_dataset(
    root: str | Path, n_train: int = 48, n_test_good: int = 8, n_test_defect: int = 6
) -> Path:
    """Write the synthetic category under ``root`` (MVTec layout); returns the category folder."""
    category = Path(root) / DEMO_CATEGORY
    rng = np.random.default_rng(0)
    folders = [category / "train" / "good", category / "test" / "good"]
    folders += [category / "test" / d for d in DEFECTS] + [category / "ground_truth" / d for d in DEFECTS]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(n_train):
        Image.fromarray(_part(rng)).save(category / "train" / "good" / f"{index:03d}.png")
    for index in range(n_test_good):
        Image.fromarray(_part(rng)).save(category / "test" / "good" / f"{index:03d}.png")
    for kind in DEFECTS:
        for index in range(n_test_defect):
            image, mask = _defect(_part(rng), kind, rng)
            Image.fromarray(image).save(category / "test" / kind / f"{index:03d}.png")
            Image.fromarray(mask).save(category / "ground_truth" / kind / f"{index:03d}_mask.png")
    return category


def write_demo_goods(folder: str | Path, count: int, seed: int) -> list[Path]:
    """``count`` more defect-free parts as PNGs in ``folder`` (e.g. good images to calibrate on).

    Drawn from the demo's distribution with their own ``seed`` (the category uses seed 0), so
    they are fresh normal data, exchangeable with the category's good images.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    paths = [folder / f"good-{seed}-{index:04d}.png" for index in range(count)]
    for path in paths:
        Image.fromarray(_part(rng)).save(path)
    return paths


def train_demo_image_run(out_dir: str | Path, data_root: str | Path | None = None) -> Path:
    """Train a small FastFlow-USF on the demo category (about a minute on a CPU); returns the run dir.

    The data is written to ``data_root`` (default: ``out_dir/../demo_data``). The backbone is the
    offline ImageNet EfficientNet-Lite0.
    """
    from training.image.train import train_image_run

    out_dir = Path(out_dir)
    data_root = Path(data_root) if data_root is not None else out_dir.parent / "demo_data"
    category = write_demo_dataset(data_root)
    return train_image_run(
        category,
        "fastflow",
        "usf",
        out_dir,
        profile="cpu",
        seed=0,
        input_size=DEMO_SIZE,
        epochs=8,
        patience=3,
        batch_size=8,
        model_args={"flow_steps": 4},
    )
