"""Read the inputs of ``usfad score``: tabular rows from CSV / NPZ, or image files.

Rows are matched to the bundle's feature names; images are decoded and resized with the
service's own functions (``service.images``) so offline scores equal served scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.bundles.manifest import Manifest
from service.errors import InputError
from service.images import decode_for_model
from training.tabular.data import TabularDataError, load_csv

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
OFFLINE_MAX_PIXELS = 256_000_000  # files on disk: only the decoder's own bomb backstop applies


@dataclass
class TabularInput:
    """Rows in the bundle's column order, optional 0/1 labels, and a label per row for output."""

    rows: np.ndarray
    labels: np.ndarray | None
    ids: list[str]


def _npz_rows(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        keys = sorted(archive.files)
        if "X" in keys:
            x = np.asarray(archive["X"])
        elif len(keys) == 1:
            x = np.asarray(archive[keys[0]])
        else:
            raise InputError("--input", f"{path}: expected an array 'X' (found {keys})")
        y = np.asarray(archive["y"]).ravel() if "y" in keys else None
    if x.ndim != 2:
        raise InputError("--input", f"{path}: 'X' must be 2-D (rows × features), got shape {list(x.shape)}")
    if y is not None and (len(y) != len(x) or not np.isin(y, (0, 1)).all()):
        y = None  # not usable as labels; scores are still written
    return x, y


def _csv_rows(
    path: Path, manifest: Manifest, label_column: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        table = load_csv(path, label_column)
    except TabularDataError as error:
        raise InputError("--input", str(error)) from error
    wanted = manifest.feature_names
    header = table.feature_names
    if set(wanted) <= set(header):
        extra = [name for name in header if name not in set(wanted)]
        if extra:
            raise InputError(
                "--input", f"{path}: columns {extra[:5]} are not features of the model (use --label-column?)"
            )
        order = [header.index(name) for name in wanted]
        return table.x[:, order], table.y
    if len(header) == len(wanted) and not set(header) & set(wanted):
        return table.x, table.y  # no name in common, same count: columns taken in the model's order
    missing = [name for name in wanted if name not in set(header)]
    raise InputError(
        "--input",
        f"{path}: {len(header)} columns, the model expects {len(wanted)} features named {wanted[:5]}… "
        f"(missing: {missing[:5]})",
    )


def read_tabular_input(path: str | Path, manifest: Manifest, label_column: str | None = None) -> TabularInput:
    """Rows of a ``.npz`` (array ``X``, optional ``y``) or a ``.csv`` with a header row."""
    file = Path(path)
    if not file.is_file():
        raise InputError("--input", f"file not found: {file}")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        rows, labels = _npz_rows(file)
    elif suffix == ".csv":
        rows, labels = _csv_rows(file, manifest, label_column)
    else:
        raise InputError("--input", f"{file}: unsupported file type {suffix!r} (expected .csv or .npz)")
    return TabularInput(rows, labels, [str(index) for index in range(len(rows))])


def image_files(paths: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError("--input", f"file not found: {path}")
    if not found:
        raise InputError(
            "--input", f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {[str(p) for p in paths]}"
        )
    return found


def read_image(path: Path, manifest: Manifest) -> np.ndarray:
    """One image as uint8 ``[H, W, C]`` at the model's size and colour mode (service decoding)."""
    height, width = manifest.image_size
    data = path.read_bytes()  # the service's decoding (JPEG draft included), without its per-request limit
    field = f"--input {path}"
    _, image = decode_for_model(data, manifest.color_mode, height, width, field, OFFLINE_MAX_PIXELS)
    return image
