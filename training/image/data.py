"""MVTec AD layout categories: file lists, input geometry, and images / masks as tensors.

anomalib's generic folder layout is read by :mod:`training.image.folder` into the same
:class:`Category` (``load_category(root, layout)``).

Layout (MVTec AD, VisA in MVTec layout, the shared Magnetic Tile data)::

    CATEGORY/train/good/*            defect-free training images
    CATEGORY/test/good/*             defect-free test images
    CATEGORY/test/<defect>/*         defective test images
    CATEGORY/ground_truth/<defect>/<stem>_mask.png   binary pixel masks

Hand-written rather than anomalib's ``MVTecADDataset``: that class only accepts MVTec's own
category names and ``.png`` files, while VisA-in-MVTec-layout and Magnetic Tile use ``.jpg``
and arbitrary names.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.image.category import Category, list_images
from training.image.folder import FolderLayout, load_folder_category


def load_category(root: str | Path, layout: FolderLayout | None = None) -> Category:
    """List a category in MVTec layout, or in anomalib's folder ``layout`` when given.

    A clear error names what is missing.
    """
    if layout is not None:
        return load_folder_category(root, layout)
    root = Path(root)
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"data: {root} is not an MVTec-layout category (no train/good folder); for anomalib's "
            "folder layout pass --layout folder --normal-dir DIR [--abnormal-dir DIR ...]"
        )
    train = list_images(train_dir)
    if not train:
        raise FileNotFoundError(f"data: {train_dir} holds no images")
    test, labels, masks = [], [], []
    test_dir = root / "test"
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []:
        for path in list_images(defect_dir):
            defective = defect_dir.name != "good"
            mask = root / "ground_truth" / defect_dir.name / f"{path.stem}_mask.png"
            test.append(path)
            labels.append(int(defective))
            masks.append(mask if defective and mask.is_file() else None)
    return Category(root, train, test, labels, masks)


def find_categories(data_dir: str | Path) -> list[Path]:
    """Category folders under ``data_dir`` (``data_dir`` itself when it is one)."""
    data_dir = Path(data_dir)
    if (data_dir / "train" / "good").is_dir():
        return [data_dir]
    found = (
        sorted(p for p in data_dir.iterdir() if (p / "train" / "good").is_dir()) if data_dir.is_dir() else []
    )
    if not found:
        raise FileNotFoundError(f"data_dir: no MVTec-layout category (with train/good) under {data_dir}")
    return found


def typical_geometry(paths: list[Path], long_side: int, stride: int) -> tuple[int, int]:
    """``(H, W)`` keeping the median aspect ratio of ``paths``; long side ``long_side``.

    Both sides are rounded to a multiple of the backbone's largest ``stride`` (at least one
    stride), so that every feature map has an integer size.
    """
    ratios = []
    for path in paths:
        with Image.open(path) as image:
            ratios.append(image.height / image.width)
    ratio = statistics.median(ratios)
    if ratio >= 1:
        height, width = long_side, long_side / ratio
    else:
        height, width = long_side * ratio, long_side

    def snap(side: float) -> int:
        return max(stride, int(round(side / stride)) * stride)

    return snap(height), snap(width)


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 array ``[H, W, 3]`` resized bilinearly to ``size = (H, W)``."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


def load_images(paths: list[Path], size: tuple[int, int]) -> torch.Tensor:
    """uint8 tensor ``[N, H, W, 3]`` (the scorer's input format)."""
    return torch.from_numpy(np.stack([read_image(p, size) for p in paths]))


def load_masks(paths: list[Path | None], size: tuple[int, int]) -> torch.Tensor:
    """Binary masks ``[N, H, W]`` (nearest-neighbour resize); all-zero where the path is None."""
    masks = np.zeros((len(paths), size[0], size[1]), dtype=np.uint8)
    for index, path in enumerate(paths):
        if path is not None:
            with Image.open(path) as image:
                resized = image.convert("L").resize((size[1], size[0]), Image.NEAREST)
            masks[index] = np.asarray(resized) > 127
    return torch.from_numpy(masks)


def split_train_validation(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Random split of the *training* good images into (train, validation); never the test set."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(paths))
    n_val = max(1, int(round(fraction * len(paths))))
    if n_val >= len(paths):
        raise ValueError(f"data: {len(paths)} training images are too few to hold out a validation split")
    val = sorted(paths[i] for i in order[:n_val])
    train = sorted(paths[i] for i in order[n_val:])
    return train, val
