"""Python API: train one tabular detector on normal rows and write a run directory."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.families import TABULAR_FLOW_KIND
from service.contract import RunRecord
from training.calibration import write_run_calibration
from training.run_files import fingerprint_array, save_run
from training.tabular.data import Standardizer, TabularDataError, holdout_split
from training.tabular.families import fit_detector, resolve, score_rows
from training.tabular.run import build_tabular_scorer

THRESHOLD_PERCENTILE = 99.0


class TrainingFailedError(RuntimeError):
    """Training produced a non-finite loss; the run directory records the failure."""


def train_tabular_run(
    x_normal: np.ndarray,
    family: str,
    out_dir: str | Path,
    *,
    feature_names: list[str] | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    x_val: np.ndarray | None = None,
    source: str = "array",
) -> Path:
    """Fit ``family`` on normal rows ``x_normal`` (original units) and save a run directory.

    Without ``x_val`` a random 10 % of ``x_normal`` is held out. Standardisation statistics
    come from the fitting rows; the threshold is the 99th percentile of the scores of the
    held-out normal rows (labels of test data are never used), and their sorted scores are
    the run's conformal calibration (``calibration.json``; tabular training stops on the
    training loss, so neither training nor early stopping saw them). Raises
    :class:`TrainingFailedError` (after writing ``run.json`` with ``fit.failed = true``) when
    the loss became NaN/Inf.
    """
    x_normal = np.asarray(x_normal, dtype=np.float64)
    if x_normal.ndim != 2:
        raise TabularDataError(f"x_normal must be 2-D (rows × features), got shape {x_normal.shape}")
    features = x_normal.shape[1]
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(features)]
    if len(names) != features:
        raise TabularDataError(f"feature_names has {len(names)} names for {features} features")
    if not np.isfinite(x_normal).all():
        raise TabularDataError("x_normal holds NaN or infinite values")
    if x_val is None:
        fit_index, hold_index = holdout_split(len(x_normal), seed)
        x_fit, x_hold = x_normal[fit_index], x_normal[hold_index]
        threshold_source = "10% of the normal training rows held out"
    else:
        x_fit, x_hold = x_normal, np.asarray(x_val, dtype=np.float64)
        if x_hold.ndim != 2 or x_hold.shape[1] != features:
            raise TabularDataError(f"x_val must have shape (rows, {features}), got {x_hold.shape}")
        threshold_source = "the given validation rows (normal)"

    config, settings = resolve(family, features, seed, overrides)
    standardizer = Standardizer.fit(x_fit)
    started = time.perf_counter()
    outcome = fit_detector(family, torch.from_numpy(standardizer.transform(x_fit)), config, settings, seed)
    seconds = time.perf_counter() - started

    scorer = build_tabular_scorer(family, config, standardizer.mean, standardizer.std)
    scorer.detector.load_state_dict(outcome.detector.state_dict())
    scorer.eval()
    hold_scores, _ = score_rows(outcome.detector, torch.from_numpy(standardizer.transform(x_hold)))
    hold_scores_np = hold_scores.numpy().astype(np.float64)
    finite = bool(np.isfinite(hold_scores_np).all())
    threshold = float(np.percentile(hold_scores_np, THRESHOLD_PERCENTILE)) if finite else float("nan")
    failed = outcome.result.failed or not finite
    stop_reason = outcome.result.stop_reason if finite else "non-finite scores on held-out rows"

    run = RunRecord(
        kind="tabular",
        family=family,
        flow=TABULAR_FLOW_KIND.get(family),
        config=config,
        input={"features": features, "feature_names": names},
        preprocessing={"mean": standardizer.mean.tolist(), "std": standardizer.std.tolist()},
        threshold={
            "score": threshold,
            "method": f"{THRESHOLD_PERCENTILE:g}th percentile of scores on {threshold_source}",
        },
        metrics={"holdout_rows": len(x_hold), "holdout_score_median": float(np.median(hold_scores_np))},
        training_data={"fingerprint": fingerprint_array(x_fit), "rows": len(x_fit), "source": source},
        fit={
            "epochs_run": outcome.result.epochs_run,
            "stop_reason": stop_reason,
            "failed": failed,
            "seconds": round(seconds, 3),
            "final_loss": outcome.result.best_loss,
        },
        seed=seed,
        extra={"training": asdict(settings)},
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    run.extra["calibration"] = write_run_calibration(
        out_dir,
        hold_scores_np,
        {
            "split": threshold_source,
            "data": {"fingerprint": fingerprint_array(x_hold), "rows": len(x_hold), "source": source},
        },
    )
    out = save_run(out_dir, scorer, run)
    if outcome.result.train_history:
        history = {"train_loss": outcome.result.train_history}
        (out / "history.json").write_text(json.dumps(history))
    if failed:
        raise TrainingFailedError(f"training {family} failed: {stop_reason} (recorded in {out / 'run.json'})")
    return out
