"""``usfad bench image``: the grid of families × flows × seeds (+ PaDiM, PatchCore) on every category.

Runs go to ``OUT/runs/<category>/<model>/seed<k>``; a finished run is reused when the command is
started again (the grid can be resumed), and several bench processes may share one ``OUT``
(e.g. one per model family). ``results.csv`` and ``tables.md`` are rewritten after
every run, so a grid stopped early still reports what finished. Seeds are the outer loop: every
configuration gets seed 0 before any gets seed 1.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from models.image.backbone import MCAIT, BackboneSpec
from training import progress
from training.image.backbone_choice import resolve_backbone
from training.image.data import find_categories
from training.image.folder import FolderLayout
from training.image.report import METRICS, ablation_plot, column_name, save_overlay, write_tables

logger = logging.getLogger("usfad.bench.image")
OVERLAY_IMAGES = 3


def _row(category: str, result: dict[str, Any]) -> dict[str, Any]:
    fit = result.get("fit", {})
    return {
        "category": category,
        "model": result["family"],
        "flow": result.get("flow"),
        "column": column_name(result["family"], result.get("flow")),
        "seed": result.get("seed", 0),
        **{m: result.get("metrics", {}).get(m) for m in METRICS},
        "epochs_run": fit.get("epochs_run"),
        "stop_reason": fit.get("stop_reason"),
        "failed": fit.get("failed"),
        "seconds": fit.get("seconds"),
        "score_ms_per_image": result.get("scoring", {}).get("ms_per_image"),
        "profile": result.get("profile"),
        "backbone": result.get("backbone"),
    }


def collect_results(out: Path) -> pd.DataFrame:
    """One row per finished run under ``out/runs`` (so several bench processes can share ``out``)."""
    rows = []
    for path in sorted((out / "runs").glob("*/*/seed*/*.json")):
        if path.name in ("run.json", "result.json"):
            rows.append(_row(path.parents[2].name, json.loads(path.read_text())))
    return pd.DataFrame(rows)


def _overlays(run_dir: Path, data_dir: Path, out: Path, layout: FolderLayout | None = None) -> None:
    """Anomaly-map overlays of a few defective test images for one run."""
    import torch

    from training.image.data import load_category, load_images, load_masks
    from training.runs import load_scorer

    scorer, run = load_scorer(run_dir)
    size = (run["input"]["height"], run["input"]["width"])
    category = load_category(data_dir, layout)
    chosen = [i for i, label in enumerate(category.test_labels) if label == 1][
        :: max(1, sum(category.test_labels) // OVERLAY_IMAGES)
    ]
    chosen = chosen[:OVERLAY_IMAGES]
    if not chosen:
        return
    images = load_images([category.test[i] for i in chosen], size)
    masks = load_masks([category.test_masks[i] for i in chosen], size)
    with torch.no_grad():
        scores, _, maps = scorer(images)
    out.mkdir(parents=True, exist_ok=True)
    name = column_name(run["family"], run["flow"])
    for k, index in enumerate(chosen):
        title = (
            f"{name}, seed {run['seed']}, {run['profile']} profile\n{run['backbone']}\n"
            f"{category.test[index].parent.name}/{category.test[index].name}: score {float(scores[k]):.3g}"
        )
        save_overlay(images[k], maps[k], masks[k], title, out / f"{category.name}_{name}_{k}.png")


def run_image_bench(
    data_dir: str | Path,
    out: str | Path,
    *,
    models: list[str],
    flows: list[str],
    seeds: int = 3,
    references: list[str] | None = None,
    profile: str = "cpu",
    report_only: bool = False,
    **overrides: Any,
) -> Path:
    """Run (or resume) the grid and write ``results.csv``, ``tables.md``, ``ablation.png``, overlays.

    ``report_only`` trains nothing: it rewrites the outputs from the runs already under ``out``.
    """
    from training.image.reference import run_reference
    from training.image.train import train_image_run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overrides.setdefault("feature_cache", str(out / "feature_cache"))
    if overrides.get("backbone") == MCAIT and (set(models) - {"uflow"} or references):
        raise ValueError("--backbone mcait is U-Flow's backbone only: pass --models uflow --no-references")
    layout = overrides.get("folder_layout")
    # A folder-layout root is one category; otherwise every MVTec-layout category under data_dir.
    categories = [Path(data_dir)] if layout is not None else find_categories(data_dir)
    references = list(references or [])
    columns = [column_name(m, f) for m in models for f in flows] + references
    choices = {
        m: resolve_backbone(m, profile, overrides.get("backbone"), overrides.get("backbone_weights"))
        for m in models
    }
    described = {m: BackboneSpec(c.name, c.weights).describe() for m, c in choices.items()}
    backbones = "; ".join(f"{m}: **{text}**" for m, text in described.items())
    notes = "".join(f"\n\nNote ({m}): {c.note}." for m, c in choices.items() if c.note)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        f"# Image benchmark\n\nprofile: **{profile}**; backbones: {backbones}; seeds: {seeds}; "
        f"categories: {', '.join(c.name for c in categories)}; started {started}.{notes}\n"
        "Values in %, mean ± std over seeds; best per row in bold, second underlined."
    )

    def flush() -> None:
        frame = collect_results(out)
        frame.to_csv(out / "results.csv", index=False)
        write_tables(frame, columns, header, out / "tables.md")

    grid_bar = progress.bar(seeds * len(categories) * len(columns), "bench image", unit="run")
    for seed in range(seeds):
        for category_dir in categories:
            for model in models:
                for flow in flows:
                    run_dir = out / "runs" / category_dir.name / column_name(model, flow) / f"seed{seed}"
                    if report_only and not (run_dir / "run.json").is_file():
                        continue
                    if not (run_dir / "run.json").is_file():
                        logger.info("training %s %s-%s seed %d", category_dir.name, model, flow, seed)
                        train_image_run(
                            category_dir, model, flow, run_dir, profile=profile, seed=seed, **overrides
                        )
                    overlays = out / "overlays"
                    if seed == 0 and not any(overlays.glob(f"{category_dir.name}_{model}-{flow}_*.png")):
                        _overlays(run_dir, category_dir, overlays, layout)
                    flush()
                    grid_bar.update(1)
            for name in references:
                ref_dir = out / "runs" / category_dir.name / name / f"seed{seed}"
                if report_only and not (ref_dir / "result.json").is_file():
                    continue
                if not (ref_dir / "result.json").is_file():
                    logger.info("fitting reference %s on %s seed %d", name, category_dir.name, seed)
                    run_reference(category_dir, name, ref_dir, profile=profile, seed=seed, **overrides)
                flush()
                grid_bar.update(1)
    grid_bar.close()
    ablation_plot(collect_results(out), models, out / "ablation.png")
    return out
