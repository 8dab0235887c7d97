"""A category's files (``Category``) and which suffixes count as images: shared by both layouts.

:mod:`training.image.data` lists MVTec-layout categories, :mod:`training.image.folder`
anomalib's folder layout; both produce this ``Category`` (a leaf module, so neither imports
the other's listing code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Category:
    """The files of one category."""

    root: Path
    train: list[Path]
    test: list[Path]
    test_labels: list[int]  # 1 = defective
    test_masks: list[Path | None]  # None for good images (and defects without a mask file)

    @property
    def name(self) -> str:
        """The category's folder name."""
        return self.root.name


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
