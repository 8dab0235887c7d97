"""Summaries and figures of a tabular benchmark (``results.csv`` → tables and PNGs).

Per model, AUC-ROC is first averaged over the successful seeds of each data set; the mean,
standard deviation (across data sets, as in the paper's Figure 3a) and median are taken over
the data sets on which *every* model has at least one successful run, so all models are
compared on the same data sets. ``#wins`` counts data sets where a model has the highest mean
AUC-ROC (ties count for each tied model); ``#failed`` counts failed runs.
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.tabular.bench import RESULTS_FILE, SETTINGS_FILE, read_results


@dataclass
class ModelSummary:
    """One line of the summary table (AUC values in percent)."""

    model: str
    mean_auc: float
    std_auc: float
    median_auc: float
    mean_ap: float
    wins: int
    failed: int
    runs: int
    datasets: int


def per_dataset_auc(rows: list[dict[str, str]], metric: str = "auc_roc") -> dict[str, dict[str, float]]:
    """``{model: {dataset: mean metric over the successful seeds}}``."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["failed"] == "True" or row.get(metric, "") == "":
            continue
        values.setdefault(row["model"], {}).setdefault(row["dataset"], []).append(float(row[metric]))
    return {m: {d: float(np.mean(v)) for d, v in by_d.items()} for m, by_d in values.items()}


def summarize(rows: list[dict[str, str]], models: list[str]) -> tuple[list[ModelSummary], list[str]]:
    """Summary lines for ``models`` and the common data sets they were computed on."""
    auc = per_dataset_auc(rows)
    ap = per_dataset_auc(rows, "average_precision")
    datasets = sorted({r["dataset"] for r in rows})
    # Models without any successful run would empty the common set; they still show #failed.
    scored = [m for m in models if auc.get(m)]
    common = [d for d in datasets if all(d in auc[m] for m in scored)]
    best = {d: max(auc[m][d] for m in scored) for d in common}
    summaries = []
    for model in models:
        ok = model in scored and bool(common)
        values = np.array([auc[model][d] for d in common]) * 100 if ok else np.array([math.nan])
        aps = np.array([ap[model][d] for d in common]) * 100 if ok else np.array([math.nan])
        model_rows = [r for r in rows if r["model"] == model]
        summaries.append(
            ModelSummary(
                model=model,
                mean_auc=float(np.mean(values)),
                std_auc=float(np.std(values)),
                median_auc=float(np.median(values)),
                mean_ap=float(np.mean(aps)),
                wins=sum(1 for d in common if ok and auc[model][d] >= best[d] - 1e-12),
                failed=sum(1 for r in model_rows if r["failed"] == "True"),
                runs=len(model_rows),
                datasets=len(auc.get(model, {})),
            )
        )
    return summaries, common


def markdown_table(summaries: list[ModelSummary], n_common: int) -> str:
    """The summary as a Markdown table (AUC-ROC and AP in percent)."""
    lines = [
        f"| model | mean AUC-ROC ± std ({n_common} data sets) | median | mean AP | #wins | #failed / runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in sorted(summaries, key=lambda s: -s.mean_auc if math.isfinite(s.mean_auc) else math.inf):
        lines.append(
            f"| {s.model} | {s.mean_auc:.2f} ± {s.std_auc:.2f} | {s.median_auc:.2f} | {s.mean_ap:.2f} "
            f"| {s.wins} | {s.failed} / {s.runs} |"
        )
    return "\n".join(lines)


def _plots(
    auc: dict[str, dict[str, float]], models: list[str], common: list[str], out: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [[auc[m][d] * 100 for d in common] for m in models]
    fig, ax = plt.subplots(figsize=(1.3 * len(models) + 2, 4.5))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right")
    ax.set_ylabel("AUC-ROC (%)")
    ax.set_title(f"{title}\nAUC-ROC over {len(common)} data sets (means as triangles)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "boxplot_auc.png", dpi=120)
    plt.close(fig)

    wins = np.array([[sum(auc[a][d] > auc[b][d] for d in common) for b in models] for a in models])
    fig, ax = plt.subplots(figsize=(0.8 * len(models) + 3, 0.7 * len(models) + 2.5))
    ax.imshow(wins, cmap="Blues")
    for i in range(len(models)):
        for j in range(len(models)):
            if i != j:
                ax.text(j, i, str(wins[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    ax.set_title(f"{title}\n#data sets where the row model beats the column model", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pairwise_wins.png", dpi=120)
    plt.close(fig)


def write_report(out_dir: str | Path) -> str:
    """Write ``summary.md``, ``summary.csv``, ``per_dataset_auc.csv`` and both PNGs; return the table."""
    out = Path(out_dir)
    rows = read_results(out)
    if not rows:
        raise FileNotFoundError(f"{out / RESULTS_FILE} has no results yet")
    settings: dict[str, Any] = json.loads((out / SETTINGS_FILE).read_text())
    models = [m for m in settings["models"] if any(r["model"] == m for r in rows)]
    summaries, common = summarize(rows, models)
    protocol = "paper protocol" if settings["profile"] == "paper" and not settings["overrides"] else ""
    header = protocol or settings["description"]
    if settings.get("max_train_rows"):
        header += f"; training rows capped at {settings['max_train_rows']} for every model"
    seeds = sorted({int(r["seed"]) for r in rows})
    table = markdown_table(summaries, len(common))
    text = (
        f"# Tabular benchmark summary\n\n{header}\n\n"
        f"Seeds with results: {seeds}; data sets with results for every model: {len(common)} of "
        f"{len({r['dataset'] for r in rows})}.\n\n{table}\n"
    )
    (out / "summary.md").write_text(text)
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "mean_auc", "std_auc", "median_auc", "mean_ap", "wins", "failed", "runs"])
        for s in summaries:
            writer.writerow(
                [s.model, s.mean_auc, s.std_auc, s.median_auc, s.mean_ap, s.wins, s.failed, s.runs]
            )
    auc = per_dataset_auc(rows)
    with (out / "per_dataset_auc.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dataset", *models])
        for d in sorted({r["dataset"] for r in rows}):
            writer.writerow([d, *(f"{auc.get(m, {}).get(d, float('nan')) * 100:.2f}" for m in models)])
    plotted = [m for m in models if auc.get(m)]
    if common and plotted:
        _plots(auc, plotted, common, out, textwrap.fill(header, 100))
    return text
