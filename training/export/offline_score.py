"""``usfad score``: score files with a bundle offline, through the service's own loader.

``service.bundles.bundle.load_bundle`` verifies the checksums and runs ``model.onnx`` in ONNX
Runtime, so these results are the ones the service returns for the same inputs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.bundles.bundle import Bundle, load_bundle
from service.errors import InputError
from service.inputs import validate_tabular_rows
from service.verdict import is_anomaly
from training.export.score_inputs import image_files, read_image, read_tabular_input

IMAGE_BATCH = 16


@dataclass
class ScoreTable:
    """Per-input results of a bundle, plus labels when the input file carried them."""

    ids: list[str]
    score: np.ndarray
    nll: np.ndarray
    threshold: float
    labels: np.ndarray | None = None
    map_max: np.ndarray | None = None
    maps: np.ndarray | None = field(default=None, repr=False)

    @property
    def anomalous(self) -> np.ndarray:
        """``score > threshold`` per input, and true where the score is not finite (``service.verdict``)."""
        return is_anomaly(self.score, self.threshold)

    def to_csv(self) -> str:
        """``id,score,nll,anomalous[,map_max][,label]`` with a header row."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = ["id", "score", "nll", "anomalous"]
        header += ["map_max"] if self.map_max is not None else []
        header += ["label"] if self.labels is not None else []
        writer.writerow(header)
        for index, row_id in enumerate(self.ids):
            row = [row_id, f"{self.score[index]:.9g}", f"{self.nll[index]:.9g}", int(self.anomalous[index])]
            row += [f"{self.map_max[index]:.9g}"] if self.map_max is not None else []
            row += [int(self.labels[index])] if self.labels is not None else []
            writer.writerow(row)
        return buffer.getvalue()

    def auroc(self) -> float | None:
        """AUROC of ``score`` against the labels (1 = anomaly), when both classes are present."""
        if self.labels is None or len(np.unique(self.labels)) < 2:
            return None
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(self.labels, self.score))


def score_tabular_file(bundle: Bundle, path: str | Path, label_column: str | None = None) -> ScoreTable:
    """Score every row of a CSV / NPZ file."""
    table = read_tabular_input(path, bundle.manifest, label_column)
    outputs = bundle.run(validate_tabular_rows(table.rows, bundle.manifest, field=f"--input {path}: rows"))
    return ScoreTable(table.ids, outputs.score, outputs.nll, bundle.manifest.threshold, labels=table.labels)


def score_image_files(bundle: Bundle, paths: list[str | Path], keep_maps: bool = False) -> ScoreTable:
    """Score image files (or folders of them) in batches of :data:`IMAGE_BATCH`."""
    files = image_files(paths)
    scores, nlls, map_max, maps = [], [], [], []
    for start in range(0, len(files), IMAGE_BATCH):
        batch = np.stack([read_image(path, bundle.manifest) for path in files[start : start + IMAGE_BATCH]])
        outputs = bundle.score_images(batch)
        scores.append(outputs.score)
        nlls.append(outputs.nll)
        if outputs.anomaly_map is not None:
            map_max.append(outputs.anomaly_map.reshape(len(batch), -1).max(axis=1))
            if keep_maps:
                maps.append(outputs.anomaly_map)
    return ScoreTable(
        [str(path) for path in files],
        np.concatenate(scores),
        np.concatenate(nlls),
        bundle.manifest.threshold,
        map_max=np.concatenate(map_max) if map_max else None,
        maps=np.concatenate(maps) if maps else None,
    )


def score_files(
    bundle_dir: str | Path,
    inputs: list[str | Path],
    label_column: str | None = None,
    keep_maps: bool = False,
    threads: int = 0,
) -> tuple[Bundle, ScoreTable]:
    """Load (and verify) the bundle on CPU and score ``inputs`` (one table file, or images)."""
    bundle = load_bundle(bundle_dir, device="cpu", threads=threads)
    if bundle.manifest.kind == "tabular":
        if len(inputs) != 1:
            raise InputError("--input", f"a tabular bundle scores one CSV / NPZ file, got {len(inputs)}")
        return bundle, score_tabular_file(bundle, inputs[0], label_column)
    return bundle, score_image_files(bundle, inputs, keep_maps)
