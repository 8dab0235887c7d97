"""Tabular data: reading ``.npz`` / ``.csv`` files, the paper's split, standardisation.

Standardisation uses statistics of the training rows only. Features whose training standard
deviation is below ``STD_FLOOR`` (constant columns, which ADBench contains) get ``std = 1``,
so they are centred but never divided by ~0: a test row that differs in such a column moves
by its raw difference instead of exploding to ±∞.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STD_FLOOR = 1e-8


class TabularDataError(ValueError):
    """Input data that cannot be used, with a message naming the field / file."""


@dataclass
class TabularData:
    """Feature rows ``x`` (float64), optional labels ``y`` (1 = anomaly) and feature names."""

    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    source: str


@dataclass
class Standardizer:
    """``(x − mean) / std`` with statistics of the training rows."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Mean and std per feature; stds below ``STD_FLOOR`` are replaced by 1."""
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std = np.where(std < STD_FLOOR, 1.0, std)
        return cls(mean=mean, std=std)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardised rows as float32."""
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass
class OneClassSplit:
    """The paper's protocol: train on normal rows of a random 70 %, test on the other 30 %."""

    train_index: np.ndarray  # normal rows of the training part only
    test_index: np.ndarray
    dropped_anomalies: int  # anomalies removed from the training part


def one_class_split(y: np.ndarray, seed: int, test_fraction: float = 0.3) -> OneClassSplit:
    """Random ``1 − test_fraction`` / ``test_fraction`` split, anomalies removed from training."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test_index = np.sort(order[:n_test])
    train_part = np.sort(order[n_test:])
    normal_train = train_part[y[train_part] == 0]
    return OneClassSplit(normal_train, test_index, int((y[train_part] == 1).sum()))


def holdout_split(n_rows: int, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, holdout)``: a random ``fraction`` of rows held out (at least one)."""
    if n_rows < 2:
        raise TabularDataError(f"need at least 2 normal rows to train, got {n_rows}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_hold = max(1, int(round(fraction * n_rows)))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def check_finite(x: np.ndarray, feature_names: list[str], source: str) -> None:
    """Raise naming the first column and row holding NaN / ±Inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise TabularDataError(
            f"{source}: column {feature_names[col]!r} row {row + 1} is not a finite number ({x[row, col]})"
        )


def load_npz(path: str | Path) -> TabularData:
    """An ADBench-format ``.npz`` with ``X`` (n × d) and ``y`` (n,; 1 = anomaly)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        for key in ("X", "y"):
            if key not in archive.files:
                raise TabularDataError(f"{path}: array {key!r} is missing (found {sorted(archive.files)})")
        x = np.asarray(archive["X"], dtype=np.float64)
        y = np.asarray(archive["y"]).astype(np.int64).ravel()
    if x.ndim != 2:
        raise TabularDataError(f"{path}: 'X' must be 2-D (rows × features), got shape {x.shape}")
    if len(y) != len(x):
        raise TabularDataError(f"{path}: 'y' has {len(y)} entries but 'X' has {len(x)} rows")
    if not np.isin(y, (0, 1)).all():
        raise TabularDataError(f"{path}: 'y' must hold only 0 (normal) and 1 (anomaly)")
    names = [f"f{i}" for i in range(x.shape[1])]
    check_finite(x, names, str(path))
    return TabularData(x, y, names, str(path))


def load_csv(path: str | Path, label_column: str | None = None) -> TabularData:
    """A CSV with a header row; every cell numeric; optional 0/1 label column (1 = anomaly)."""
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise TabularDataError(f"{path}: the file is empty (a header row is required)")
    header = [name.strip() for name in rows[0]]
    if label_column is not None and label_column not in header:
        raise TabularDataError(f"{path}: label column {label_column!r} is not in the header {header}")
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise TabularDataError(f"{path}: no data rows after the header")
    values = np.empty((len(body), len(header)), dtype=np.float64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise TabularDataError(f"{path}: row {r + 1} has {len(row)} cells, the header has {len(header)}")
        for c, cell in enumerate(row):
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise TabularDataError(
                    f"{path}: column {header[c]!r} row {r + 1} is not a number: {cell!r}"
                ) from None
    check_finite(values, header, str(path))
    labels = None
    if label_column is not None:
        index = header.index(label_column)
        labels = values[:, index]
        if not np.isin(labels, (0, 1)).all():
            raise TabularDataError(f"{path}: label column {label_column!r} must hold only 0 and 1")
        labels = labels.astype(np.int64)
        values = np.delete(values, index, axis=1)
        header = header[:index] + header[index + 1 :]
    if values.shape[1] == 0:
        raise TabularDataError(f"{path}: no feature columns")
    return TabularData(values, labels, header, str(path))


def load_table(path: str | Path, label_column: str | None = None) -> TabularData:
    """Dispatch on the suffix: ``.npz`` (ADBench) or ``.csv``."""
    path = Path(path)
    if not path.is_file():
        raise TabularDataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path, label_column)
    raise TabularDataError(f"{path}: unsupported file type {suffix!r} (expected .npz or .csv)")
