"""Calibration scores of a run directory (``calibration.json``) and of a bundle (docs/calibration.md).

A run keeps the sorted scores of held-out normal data that neither training nor early stopping
saw; ``usfad export`` copies them into the bundle and ``usfad calibrate`` replaces them. The
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


def write_run_calibration(run_dir: str | Path, scores: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Write the sorted finite ``scores`` to ``RUN_DIR/calibration.json``; returns run.json's entry.

    Non-finite scores are not written: training marks such a run as failed anyway.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = sorted_scores(values[np.isfinite(values)]) if np.isfinite(values).any() else np.zeros(0)
    path = Path(run_dir) / RUN_CALIBRATION_FILE
    path.write_bytes(orjson.dumps({"n": int(finite.size), "scores": finite.tolist()}))
    return {"file": RUN_CALIBRATION_FILE, "n": int(finite.size), **data}


def read_run_calibration(run_dir: str | Path, run: dict[str, Any]) -> np.ndarray | None:
    """The run's sorted calibration scores, or ``None`` for a run trained without them."""
    entry = run.get("calibration")
    path = Path(run_dir) / RUN_CALIBRATION_FILE
    if not entry or not path.is_file():
        return None
    scores = np.asarray(orjson.loads(path.read_bytes())["scores"], dtype=np.float64)
    return sorted_scores(scores) if scores.size else None


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
