"""Tables of the experiment: ``trials.csv``, ``results.csv`` and the markdown ``results.md``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.experiments.alignment.search import SearchResult

RESULT_COLUMNS: tuple[str, ...] = (
    "dim",
    "model",
    "spearman_norm",
    "kendall_norm",
    "spearman_loglik",
    "kendall_loglik",
    "failed_runs",
    "runs",
    "best_trial",
    "best_val_loss",
    "best_params",
)


@dataclass
class ResultRow:
    """The statistics of the selected model for one dimension and model family.

    ``*_norm``: latent norm vs true NLL; ``*_loglik``: estimated vs true log-likelihood (flows).
    """

    dim: int
    model: str
    spearman_norm: float
    kendall_norm: float
    spearman_loglik: float
    kendall_loglik: float
    failed_runs: int
    runs: int
    best_trial: int
    best_val_loss: float
    best_params: dict = field(default_factory=dict)


def write_trials(path: Path, searches: Iterable[tuple[int, str, SearchResult]]) -> None:
    """One CSV line per trial, with its sampled hyper-parameters as JSON."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["dim", "model", "trial", "params", "val_loss", "epochs", "seconds", "failed", "selected", "stop"]
        )
        for dim, model, search in searches:
            best = search.best
            for o in search.outcomes:
                writer.writerow(
                    [
                        dim,
                        model,
                        o.trial.index,
                        json.dumps(o.trial.params, sort_keys=True),
                        f"{o.val_loss:.6g}",
                        o.epochs_run,
                        f"{o.seconds:.1f}",
                        int(o.failed),
                        int(o is best),
                        o.stop_reason,
                    ]
                )


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def markdown_table(rows: Iterable[ResultRow]) -> str:
    """The results as a GitHub markdown table (ρ/τ to three decimals, ``—`` where undefined)."""
    lines = [
        "| d | model | Spearman ρ (norm vs NLL) | Kendall τ (norm vs NLL) "
        "| Spearman ρ (log p̂ vs log p) | Kendall τ (log p̂ vs log p) | failed runs |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.dim} | {r.model} | {_fmt(r.spearman_norm)} | {_fmt(r.kendall_norm)} "
            f"| {_fmt(r.spearman_loglik)} | {_fmt(r.kendall_loglik)} | {r.failed_runs}/{r.runs} |"
        )
    return "\n".join(lines) + "\n"


def write_results(out: Path, rows: list[ResultRow]) -> None:
    """``results.csv`` (every column of :class:`ResultRow`) and ``results.md`` (the table)."""
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(RESULT_COLUMNS))
        writer.writeheader()
        for row in rows:
            record = asdict(row)
            record["best_params"] = json.dumps(row.best_params, sort_keys=True)
            writer.writerow(record)
    (out / "results.md").write_text(markdown_table(rows))
