"""anomalib's generic *folder* layout, read into the same :class:`Category` as the MVTec layout.

Layout (anomalib's ``Folder`` datamodule)::

    ROOT/<normal_dir>/*          defect-free images (training; some become test-good, see below)
    ROOT/<abnormal_dir>/*        defective test images (one or more folders)
    ROOT/<mask_dir>/*            optional pixel masks, named like the defective images (same stem)
    ROOT/<normal_test_dir>/*     optional defect-free test images

Folders are relative to ``ROOT`` or absolute. The file listing, labels and mask matching are
anomalib's ``FolderDataset``; without a ``normal_test_dir``, anomalib's seeded ``random_split``
moves ``normal_split_ratio`` of the normal images into the test set as test-good, as its
``Folder`` datamodule does. (In anomalib 2.7.0 that datamodule stores ``normal_split_ratio`` but
splits with ``test_split_ratio``; both default to 0.2.) Here the split seed is fixed per layout
(``split_seed``), not the training seed, so every run of a benchmark is tested on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.image.category import IMAGE_SUFFIXES, Category


@dataclass(frozen=True)
class FolderLayout:
    """Where the images of an anomalib folder-layout category lie (relative to its root)."""

    normal_dir: str
    abnormal_dirs: tuple[str, ...] = ()
    mask_dirs: tuple[str, ...] = ()
    normal_test_dir: str | None = None
    normal_split_ratio: float = 0.2
    split_seed: int = 0


def _folder(root: Path, folder: str, option: str) -> Path:
    """``root / folder`` (or ``folder`` when absolute); it must hold images (recursively, like anomalib)."""
    path = root / folder
    if not path.is_dir():
        raise FileNotFoundError(f"{option}: no folder at {path}")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file()):
        raise FileNotFoundError(f"{option}: {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return path


def _count_images(folders: list[Path]) -> int:
    return sum(1 for f in folders for p in f.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _validate(root: Path, layout: FolderLayout) -> None:
    """Clear errors, each naming its command-line option, before anomalib reads the folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"data: no folder at {root}")
    if not layout.normal_dir:
        raise ValueError("--normal-dir: the folder layout needs a folder of normal (good) images")
    _folder(root, layout.normal_dir, "--normal-dir")
    abnormal = [_folder(root, d, "--abnormal-dir") for d in layout.abnormal_dirs]
    masks = [_folder(root, d, "--mask-dir") for d in layout.mask_dirs]
    if layout.normal_test_dir is not None:
        _folder(root, layout.normal_test_dir, "--normal-test-dir")
    elif not 0 < layout.normal_split_ratio < 1:
        raise ValueError(f"--normal-split-ratio must lie in (0, 1), got {layout.normal_split_ratio}")
    if masks and not abnormal:
        raise ValueError("--mask-dir: masks need --abnormal-dir (the defective images they belong to)")
    if masks and _count_images(masks) != _count_images(abnormal):
        raise ValueError(
            f"--mask-dir: {_count_images(masks)} masks for {_count_images(abnormal)} abnormal images; "
            "every defective image needs one mask with the same file stem"
        )


def load_folder_category(root: str | Path, layout: FolderLayout) -> Category:
    """List a folder-layout category with anomalib's ``FolderDataset`` and ``random_split``."""
    from anomalib.data.datasets.image.folder import FolderDataset
    from anomalib.data.errors import MisMatchError
    from anomalib.data.utils import random_split

    root = Path(root).resolve()
    _validate(root, layout)

    def dataset(split: str) -> FolderDataset:
        return FolderDataset(
            name=root.name,
            root=root,
            normal_dir=layout.normal_dir,
            abnormal_dir=list(layout.abnormal_dirs) or None,
            normal_test_dir=layout.normal_test_dir,
            mask_dir=list(layout.mask_dirs) or None,
            split=split,
            extensions=IMAGE_SUFFIXES,
        )

    try:
        train, test = dataset("train"), dataset("test")
    except MisMatchError as error:
        raise ValueError(
            "--mask-dir: the masks do not match the abnormal images by file stem "
            "(anomalib pairs them in sorted order; name each mask like its image)"
        ) from error
    if layout.normal_test_dir is None:
        # As anomalib's datamodule does when the test folders hold no normal image.
        train, test_good = random_split(train, layout.normal_split_ratio, seed=layout.split_seed)
        test = test + test_good
    samples = test.samples
    return Category(
        root=root,
        train=sorted(Path(p) for p in train.samples.image_path),
        test=[Path(p) for p in samples.image_path],
        test_labels=[int(label) for label in samples.label_index],
        test_masks=[Path(m) if m else None for m in samples.mask_path],
    )
