"""Calibration scores of a run directory (``calibration.json``) and of a bundle (docs/calibration.md).

A run keeps the sorted scores of held-out normal data that neither training nor early stopping
saw (image runs also the maxima of those images' returned anomaly maps, for ``map=mask``);
``usfad export`` copies them into the bundle and ``usfad calibrate`` replaces them. The
p-value math itself lives in ``service.calibration`` (torch-free, shared with the service).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.analytic import chi2_ks
from service.calibration import sorted_scores

RUN_CALIBRATION_FILE = "calibration.json"
# Tabular flows whose latent norm follows a χ² law under their base N(c, σ² I) (models/flows/base.py).
CHI2_FAMILIES = ("usflow", "nonusflow")
BASE_VARIANCE = {"svdd": 0.5, "standard": 1.0}


def write_run_calibration(
    run_dir: str | Path,
    scores: Any,
    data: dict[str, Any],
    map_max: Any = None,
    images: list[str] | None = None,
) -> dict[str, Any]:
    """Write the sorted finite ``scores`` to ``RUN_DIR/calibration.json``; returns run.json's entry.

    Image runs also give ``map_max``, per calibration image the maximum of its returned (smoothed,
    as served) anomaly map, and ``images``, the calibration images' paths relative to the data
    root. Inputs with a non-finite score or map maximum are not written: training marks such a
    run as failed anyway.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = np.isfinite(values)
    maxima = None
    if map_max is not None:
        maxima = np.asarray(map_max, dtype=np.float64).reshape(-1)
        if maxima.size != values.size:
            raise ValueError(f"{maxima.size} map maxima for {values.size} calibration scores")
        keep &= np.isfinite(maxima)
    finite = sorted_scores(values[keep]) if keep.any() else np.zeros(0)
    document: dict[str, Any] = {"n": int(finite.size), "scores": finite.tolist()}
    if maxima is not None:
        document["map_max"] = (sorted_scores(maxima[keep]) if keep.any() else np.zeros(0)).tolist()
    if images is not None:
        document["images"] = list(images)
    path = Path(run_dir) / RUN_CALIBRATION_FILE
    path.write_bytes(orjson.dumps(document))
    return {"file": RUN_CALIBRATION_FILE, "n": int(finite.size), **data}


def _run_document(run_dir: str | Path, run: dict[str, Any]) -> dict[str, Any] | None:
    path = Path(run_dir) / RUN_CALIBRATION_FILE
    if not run.get("calibration") or not path.is_file():
        return None
    return orjson.loads(path.read_bytes())


def read_run_calibration(run_dir: str | Path, run: dict[str, Any]) -> np.ndarray | None:
    """The run's sorted calibration scores, or ``None`` for a run trained without them."""
    document = _run_document(run_dir, run)
    if document is None:
        return None
    scores = np.asarray(document["scores"], dtype=np.float64)
    return sorted_scores(scores) if scores.size else None


def read_run_map_maxima(run_dir: str | Path, run: dict[str, Any]) -> np.ndarray | None:
    """The sorted maxima of the calibration images' returned maps, ``None`` if the run has none."""
    document = _run_document(run_dir, run)
    if document is None or not document.get("map_max"):
        return None
    return sorted_scores(document["map_max"])


def analytic_law(run_or_manifest: dict[str, Any], config: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"law": "chi2", "dof": d, "scale": 1/σ²}`` for tabular flows with a Gaussian base, else None."""
    if run_or_manifest.get("kind") != "tabular" or run_or_manifest.get("family") not in CHI2_FAMILIES:
        return None
    config = config or {}
    variance = BASE_VARIANCE.get(config.get("base", "svdd"))
    features = config.get("features") or (run_or_manifest.get("input") or {}).get("features")
    if variance is None or not features:
        return None
    return {
        "law": "chi2",
        "dof": int(features),
        "scale": 1.0 / variance,
        "statistic": "scale * score^2 ~ chi2(dof) for normal data if the flow fits",
    }


def analytic_entry(law: dict[str, Any] | None, scores: np.ndarray) -> dict[str, Any] | None:
    """``law`` plus the KS distance of the calibration scores from it (how well the flow fits)."""
    if law is None:
        return None
    return {**law, **chi2_ks(scores, law["dof"], law["scale"])}
