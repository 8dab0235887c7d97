"""Benchmark outputs laid out like the paper: Tables 1–5 (markdown), Figure 4 (ablation plot), overlays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

METRICS = {"image_auroc": "Image AUROC", "pixel_auroc": "Pixel AUROC", "aupro": "AUPRO"}


def column_name(family: str, flow: str | None) -> str:
    """``fastflow-usf``; reference models keep their own name."""
    return family if not flow else f"{family}-{flow}"


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.1f}±{std:.1f}" if not math.isnan(std) else f"{mean:.1f}"


def _number(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _mark_best(values: dict[str, tuple[float, float]]) -> dict[str, str]:
    """Format ``mean±std``; highest mean bold, second underlined (as the paper's tables)."""
    order = sorted((m for m, _ in values.values() if not math.isnan(m)), reverse=True)
    cells = {}
    for column, (mean, std) in values.items():
        text = _fmt(mean, std)
        if order and mean == order[0]:
            text = f"**{text}**"
        elif len(order) > 1 and mean == order[1]:
            text = f"<u>{text}</u>"
        cells[column] = text
    return cells


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(results: pd.DataFrame, columns: list[str]) -> str:
    """Table 1: per metric, the category-averaged value, mean ± std over seeds."""
    rows = []
    for metric, label in METRICS.items():
        if metric not in results or results[metric].isna().all():
            continue
        per_seed = results.groupby(["column", "seed"])[metric].mean().groupby("column")
        values = {c: (per_seed.mean().get(c, math.nan), per_seed.std().get(c, math.nan)) for c in columns}
        cells = _mark_best(values)
        rows.append([f"mean over categories ({label})", *[cells[c] for c in columns]])
    for field, label, digits in (
        ("seconds", "training time per model (s, mean)", 0),
        ("score_ms_per_image", "scoring time per image (ms, mean)", 1),
    ):
        if field in results and not results[field].isna().all():
            means = results.groupby("column")[field].mean()
            rows.append([label, *[_number(means.get(c, math.nan), digits) for c in columns]])
    finished = results.groupby("column")["seed"].nunique()
    rows.append(["seeds finished", *[str(int(finished.get(c, 0))) for c in columns]])
    return _markdown(["metric", *columns], rows)


def category_table(results: pd.DataFrame, columns: list[str], metric: str) -> str:
    """Tables 2–5: one row per category, mean ± std over seeds; a ``#Best`` row counts wins."""
    rows, wins = [], dict.fromkeys(columns, 0)
    for category, group in results.groupby("category"):
        stats = group.groupby("column")[metric]
        values = {c: (stats.mean().get(c, math.nan), stats.std().get(c, math.nan)) for c in columns}
        best = max((m for m, _ in values.values() if not math.isnan(m)), default=math.nan)
        for column, (mean, _) in values.items():
            wins[column] += int(mean == best)
        cells = _mark_best(values)
        rows.append([str(category), *[cells[c] for c in columns]])
    rows.append(["#Best", *[str(wins[c]) for c in columns]])
    return _markdown(["category", *columns], rows)


def stopping_table(results: pd.DataFrame) -> str:
    """Per model: the epoch at which each seed stopped, and why."""
    rows = []
    for (category, column), group in results.groupby(["category", "column"]):
        detail = "; ".join(
            f"seed {s}: epoch {e} ({r})" for s, e, r in group[["seed", "epochs_run", "stop_reason"]].values
        )
        rows.append([str(category), column, detail])
    return _markdown(["category", "model", "stopped at (per seed)"], rows)


def write_tables(results: pd.DataFrame, columns: list[str], header: str, path: Path) -> None:
    """All tables in one markdown file."""
    present = [c for c in columns if c in set(results["column"])]
    parts = [header, "## Table 1 — summary (mean ± std over seeds)", summary_table(results, present)]
    for metric, label in METRICS.items():
        if metric in results and not results[metric].isna().all():
            parts += [f"## Per category — {label} (%)", category_table(results, present, metric)]
    parts += ["## Early stopping", stopping_table(results)]
    path.write_text("\n\n".join(parts) + "\n")


def ablation_plot(results: pd.DataFrame, families: list[str], path: Path) -> bool:
    """Figure 4: per category and family, Δmean and Δstd over seeds of additive / usf vs affine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("image_auroc", "pixel_auroc") if m in results and not results[m].isna().all()]
    groups, deltas = (
        [],
        {(m, f, s): [] for m in metrics for f in ("additive", "usf") for s in ("mean", "std")},
    )
    for category, by_category in results.groupby("category"):
        for family in families:
            stats = {}
            for flow in ("affine", "additive", "usf"):
                rows = by_category[by_category["column"] == column_name(family, flow)]
                stats[flow] = {m: (rows[m].mean(), rows[m].std(ddof=1)) for m in metrics}
            if not all(len(by_category[by_category["column"] == column_name(family, f)]) for f in stats):
                continue
            groups.append(f"{category}\n{family}")
            for m in metrics:
                for flow in ("additive", "usf"):
                    deltas[(m, flow, "mean")].append(stats[flow][m][0] - stats["affine"][m][0])
                    deltas[(m, flow, "std")].append(stats[flow][m][1] - stats["affine"][m][1])
    if not groups or not metrics:
        return False
    figure, axes = plt.subplots(
        len(metrics), 2, figsize=(max(8, 1.6 * len(groups) + 3), 3.2 * len(metrics)), squeeze=False
    )
    x = np.arange(len(groups))
    for row, metric in enumerate(metrics):
        for col, stat in enumerate(("mean", "std")):
            axis = axes[row][col]
            for offset, flow, label in (
                (-0.2, "additive", "Additive (USF)"),
                (0.2, "usf", "Additive + LU (USF)"),
            ):
                axis.bar(x + offset, deltas[(metric, flow, stat)], width=0.4, label=label)
            axis.axhline(0, color="black", linewidth=0.8)
            axis.set_xticks(x, groups, fontsize=8)
            axis.set_title(f"Δ {stat}, {METRICS[metric]} (points vs affine)", fontsize=9)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def save_overlay(
    image: torch.Tensor, anomaly_map: torch.Tensor, mask: torch.Tensor | None, title: str, path: Path
) -> None:
    """Image, anomaly map overlay and ground-truth outline in one PNG (uint8 ``[H, W, 3]`` image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    axes[0].imshow(image.numpy())
    axes[0].set_title("input")
    axes[1].imshow(image.numpy())
    axes[1].imshow(anomaly_map.squeeze().numpy(), cmap="jet", alpha=0.45)
    if mask is not None and mask.any():
        axes[1].contour(mask.numpy(), levels=[0.5], colors="white", linewidths=0.8)
    axes[1].set_title(title, fontsize=7)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
