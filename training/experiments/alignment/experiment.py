"""Run the whole alignment experiment: data, searches, test-set statistics, tables and figures.

Output folder layout (every file is written by :func:`run_alignment`):

- ``config.json``  the :class:`AlignmentConfig` (search space, sizes, seed);
- ``trials.csv``   every trial: hyper-parameters, validation loss, epochs, failure;
- ``results.csv`` / ``results.md``  per dimension and model: Spearman ρ / Kendall τ of latent
  norm vs true NLL and of estimated vs true log-likelihood, failed runs, selected trial;
- ``scores.npz``   the test-set arrays behind the figures;
- ``fig5_loglik_vs_norm.png``, ``fig6_loglik_vs_estimate.png`` and, when ``d = 2`` is run,
  ``fig2_latent_2d.png``, ``fig7_volume_nonusflow.png``, ``fig8_volume_usflow.png``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.experiments.alignment.evaluate import score_model
from training.experiments.alignment.metrics import latent_alignment, likelihood_agreement
from training.experiments.alignment.mixture import AsymmetricGaussianMixture
from training.experiments.alignment.plots import write_figures
from training.experiments.alignment.preprocess import Standardization
from training.experiments.alignment.report import ResultRow, write_results, write_trials
from training.experiments.alignment.search import SearchResult, TrialOutcome, run_search
from training.experiments.alignment.space import AlignmentConfig

TABLE_FILES: tuple[str, ...] = (
    "config.json",
    "trials.csv",
    "results.csv",
    "results.md",
    "scores.npz",
    "fig5_loglik_vs_norm.png",
    "fig6_loglik_vs_estimate.png",
)
FIGURES_2D: tuple[str, ...] = ("fig2_latent_2d.png", "fig7_volume_nonusflow.png", "fig8_volume_usflow.png")


def expected_outputs(config: AlignmentConfig) -> tuple[str, ...]:
    """The files :func:`run_alignment` writes (the 2-D figures only when ``d = 2`` is run)."""
    return TABLE_FILES + (FIGURES_2D if 2 in config.dims else ())


def split_samples(mixture: AsymmetricGaussianMixture, config: AlignmentConfig) -> dict[str, torch.Tensor]:
    """Independent train / validation / test draws (float64), seeded per dimension and split."""
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    return {
        name: mixture.sample(n, seed=config.seed * 1_000_003 + mixture.dim * 10 + index)
        for index, (name, n) in enumerate(sizes.items())
    }


def _trial_line(outcome: TrialOutcome) -> str:
    status = "FAILED" if outcome.failed else f"val={outcome.val_loss:.4g}"
    return (
        f"  {outcome.trial.model} d={outcome.trial.dim} #{outcome.trial.index} {outcome.trial.params} "
        f"{status} epochs={outcome.epochs_run} {outcome.seconds:.0f}s ({outcome.stop_reason})"
    )


def _result_row(dim: int, model: str, search: SearchResult, scores: dict | None) -> ResultRow:
    best = search.best
    nan = math.nan
    norm = likelihood = None
    if scores is not None:
        norm = latent_alignment(scores["true_log_prob"], scores["latent_norm"])
        if model != "DeepSVDD":
            likelihood = likelihood_agreement(scores["true_log_prob"], scores["estimated_log_prob"])
    return ResultRow(
        dim=dim,
        model=model,
        spearman_norm=norm.spearman if norm else nan,
        kendall_norm=norm.kendall if norm else nan,
        spearman_loglik=likelihood.spearman if likelihood else nan,
        kendall_loglik=likelihood.kendall if likelihood else nan,
        failed_runs=search.failed_runs,
        runs=len(search.outcomes),
        best_trial=best.trial.index if best else -1,
        best_val_loss=best.val_loss if best else nan,
        best_params=dict(best.trial.params) if best else {},
    )


def run_alignment(config: AlignmentConfig, out: Path, log: Callable[[str], None] = print) -> list[ResultRow]:
    """Run every search of ``config``, write all outputs into ``out`` and return the result rows."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    rows, searches, arrays = [], [], {}
    for dim in config.dims:
        mixture = AsymmetricGaussianMixture(dim)
        data = split_samples(mixture, config)
        standardize = Standardization.fit(data["train"])
        train, val, test = (standardize(data[k]) for k in ("train", "val", "test"))
        true_log_prob = mixture.log_prob(data["test"]).numpy()
        arrays[f"d{dim}/true_log_prob"] = true_log_prob
        if dim == 2:
            arrays["d2/x"] = data["test"].numpy()
        for model_name in config.models:
            started = time.perf_counter()
            search = run_search(model_name, dim, train, val, config, on_trial=lambda o: log(_trial_line(o)))
            searches.append((dim, model_name, search))
            best = search.best
            scores = None
            if best is not None:
                latent = score_model(best.model, test, input_log_abs_det=standardize.log_abs_det)
                scores = {
                    "true_log_prob": true_log_prob,
                    "latent_norm": latent.latent_norm,
                    "estimated_log_prob": latent.estimated_log_prob,
                }
                prefix = f"d{dim}/{model_name}"
                arrays[f"{prefix}/latent_norm"] = latent.latent_norm
                arrays[f"{prefix}/estimated_log_prob"] = latent.estimated_log_prob
                arrays[f"{prefix}/log_abs_det"] = latent.log_abs_det
                if dim == 2:
                    arrays[f"{prefix}/latent"] = latent.latent
                    arrays[f"{prefix}/center"] = latent.center
                best.model = None
            row = _result_row(dim, model_name, search, scores)
            rows.append(row)
            log(
                f"d={dim:<4} {model_name:<10} rho(norm)={row.spearman_norm:+.4f} "
                f"tau(norm)={row.kendall_norm:+.4f} rho(loglik)={row.spearman_loglik:+.4f} "
                f"failed={row.failed_runs}/{row.runs} best=#{row.best_trial} "
                f"({time.perf_counter() - started:.0f}s)"
            )
    write_trials(out / "trials.csv", searches)
    write_results(out, rows)
    np.savez_compressed(out / "scores.npz", **arrays)
    write_figures(out, config, arrays, rows)
    return rows
