"""``usfad bench export``: ONNX Runtime vs PyTorch eager, and USF vs affine flows, side by side.

Each tabular family is trained briefly (its default architecture; the epochs matter only for
realistic weights) on the normal rows of an ADBench file with the product's training path,
exported with :func:`export_bundle`, and timed on the same test rows: eager PyTorch,
TorchScript and ONNX Runtime, alternating, with the same thread count for all. Image runs
(FastFlow, CFlow, U-Flow, each with USF and affine flow blocks) are trained for an epoch on
a few images of an MVTec-layout category, or given with ``--image-runs``, and timed the same way.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import progress
from training.export.runners import EagerRunner, OnnxRunner, TorchScriptRunner
from training.export.timing import compare_throughput, median_rate, median_ratio
from training.export.writer import export_bundle
from training.runs import load_scorer, read_run

# Pairs that differ only in the coupling (additive = USF, affine = non-USF).
TABULAR_FLOW_PAIRS = (("usflow", "nonusflow"), ("vae_usflow", "vae_nonusflow"))


def _tabular_inputs(data_path: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    from training.tabular.data import load_table, one_class_split

    data = load_table(data_path)
    if data.y is None:
        raise ValueError(f"--data: {data_path} has no labels; the benchmark needs an ADBench .npz")
    split = one_class_split(data.y, seed)
    return data.x[split.train_index], data.x[split.test_index].astype(np.float32), data.source


def _batch_of(rows: np.ndarray, size: int) -> np.ndarray:
    """``size`` rows (cycled when there are fewer), C-contiguous."""
    return np.ascontiguousarray(rows[np.arange(size) % len(rows)])


def _train_and_export(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from training.tabular.train import train_tabular_run

    train_rows, test_rows, source = _tabular_inputs(args.data)
    models = []
    for family in parse_family_list(args.families):
        run_dir = train_tabular_run(
            train_rows, family, work / "runs" / family, overrides={"epochs": args.epochs}, source=source
        )
        bundle = work / "bundles" / family.replace("_", "-")
        export_bundle(run_dir, bundle, overwrite=True)
        models.append(
            {"label": family, "kind": "tabular", "run": run_dir, "bundle": bundle, "rows": test_rows}
        )
    image_runs = [Path(run_dir) for run_dir in args.image_runs or []]
    for family in parse_family_list(args.image_families):
        for flow in parse_family_list(args.image_flows):
            image_runs.append(_train_image(args, family, flow, work / "runs" / f"{family}-{flow}"))
    for run_dir in image_runs:
        run = read_run(run_dir)
        label = f"{run['family']}-{run.get('flow')}"
        bundle = work / "bundles" / label.replace("_", "-")
        export_bundle(run_dir, bundle, overwrite=True)
        size = (int(run["input"]["height"]), int(run["input"]["width"]))
        models.append(
            {"label": label, "kind": "image", "run": run_dir, "bundle": bundle, "rows": _tiles(args, size)}
        )
    return models


def _train_image(args: argparse.Namespace, family: str, flow: str, run_dir: Path) -> Path:
    from training.image.train import train_image_run

    return train_image_run(
        args.image_data,
        family,
        flow,
        run_dir,
        epochs=args.image_epochs,
        max_train_images=args.image_train_images,
        max_test_images=2,
    )


def parse_family_list(text: str) -> list[str]:
    """``"usflow,nonusflow"`` → ``["usflow", "nonusflow"]`` (empty entries dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _tiles(args: argparse.Namespace, size: tuple[int, int], count: int = 32) -> np.ndarray:
    """``count`` test images of ``--image-data`` as the model's uint8 input (training's resizing)."""
    from training.image.data import load_category, load_images

    category = load_category(args.image_data)
    return load_images(category.test[:: max(1, len(category.test) // count)][:count], size).numpy()


def measure(args: argparse.Namespace, models: list[dict[str, Any]], batches: list[int]) -> dict[str, Any]:
    """Throughput of eager / TorchScript / ONNX Runtime per model and batch, and USF/affine ratios.

    Rates are medians over rounds; ratios are medians of the per-round ratios.
    """
    onnx_runners = {m["label"]: OnnxRunner(m["bundle"] / "model.onnx", threads=args.threads) for m in models}
    pairs = _flow_pairs(models)
    timing_bar = progress.bar((len(models) + len(pairs)) * len(batches), "bench export: timing", unit="case")
    engines = []
    for model in models:
        scorer, _ = load_scorer(model["run"])
        runners = {
            "eager": EagerRunner(scorer),
            "torchscript": TorchScriptRunner(model["bundle"] / "model.pt"),
            "onnxruntime": onnx_runners[model["label"]],
        }
        for batch in batches:
            samples = compare_throughput(runners, _batch_of(model["rows"], batch), args.seconds, args.rounds)
            row = {"model": model["label"], "batch": batch, **{k: median_rate(v) for k, v in samples.items()}}
            row["ort_over_eager"] = median_ratio(samples["onnxruntime"], samples["eager"])
            engines.append(row)
            progress.write(
                f"  {model['label']:<16} batch {batch:>3}: eager {row['eager']:>10.1f}/s, "
                f"onnxruntime {row['onnxruntime']:>10.1f}/s ({row['ort_over_eager']:.2f}x)"
            )
            timing_bar.update(1)
    variants = []
    for usf_label, affine_label in pairs:
        usf = next(m for m in models if m["label"] == usf_label)
        for batch in batches:
            samples = compare_throughput(
                {"usf": onnx_runners[usf_label], "affine": onnx_runners[affine_label]},
                _batch_of(usf["rows"], batch),
                args.seconds,
                args.rounds,
            )
            variants.append(
                {
                    "usf_model": usf_label,
                    "affine_model": affine_label,
                    "batch": batch,
                    "usf": median_rate(samples["usf"]),
                    "affine": median_rate(samples["affine"]),
                    "usf_over_affine": median_ratio(samples["usf"], samples["affine"]),
                }
            )
            timing_bar.update(1)
    timing_bar.close()
    return {"engines": engines, "variants": variants}


def _flow_pairs(models: list[dict[str, Any]]) -> list[tuple[str, str]]:
    labels = {m["label"] for m in models}
    pairs = [pair for pair in TABULAR_FLOW_PAIRS if set(pair) <= labels]
    for model in models:
        label = model["label"]
        if model["kind"] == "image" and label.endswith("-usf") and f"{label[:-4]}-affine" in labels:
            pairs.append((label, f"{label[:-4]}-affine"))
    return pairs


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def format_tables(results: dict[str, Any], threads: int) -> str:
    """Markdown tables of the measured throughputs and ratios."""
    lines = [
        f"ONNX Runtime vs PyTorch eager (CPU, {threads} thread(s); rows or images per second, median "
        "over rounds; ratios: median of the per-round ratios)",
        "",
        "| model | batch | eager | TorchScript | ONNX Runtime | ORT / eager |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["engines"]:
        lines.append(
            f"| {row['model']} | {row['batch']} | {_rate(row['eager'])} | {_rate(row['torchscript'])} | "
            f"{_rate(row['onnxruntime'])} | {row['ort_over_eager']:.2f}x |"
        )
    if results["variants"]:
        lines += [
            "",
            "USF (additive coupling) vs affine coupling, same architecture, both in ONNX Runtime",
            "",
            "| USF model | affine model | batch | USF | affine | USF / affine |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in results["variants"]:
            lines.append(
                f"| {row['usf_model']} | {row['affine_model']} | {row['batch']} | {_rate(row['usf'])} | "
                f"{_rate(row['affine'])} | {row['usf_over_affine']:.2f}x |"
            )
    return "\n".join(lines)


def parse_batches(text: str) -> list[int]:
    """``"1,32"`` → ``[1, 32]``; anything but positive integers is refused naming ``--batches``."""
    try:
        batches = [int(item) for item in str(text).split(",") if item.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise ValueError(f"--batches: expected comma-separated positive integers, got {text!r}")
    return batches


def run_export_bench(args: argparse.Namespace) -> int:
    """Handler body of ``usfad bench export``; prints the tables, optionally writes JSON."""
    batches = parse_batches(args.batches)
    if args.threads < 1 or args.seconds <= 0 or args.rounds < 1:
        raise ValueError("--threads and --rounds must be at least 1 and --seconds positive")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="usfad-bench-export-") as temporary:
            work = Path(args.work_dir) if args.work_dir else Path(temporary)
            print(f"training and exporting into {work} ...", flush=True)
            models = _train_and_export(args, work)
            results = measure(args, models, batches)
    finally:
        torch.set_num_threads(previous_threads)
    print(format_tables(results, args.threads))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    kept = f"runs and bundles in {args.work_dir}" if args.work_dir else "runs and bundles were temporary"
    print(f"results: the tables above; JSON in {args.output or '(none: pass --output FILE.json)'}; {kept}")
    return 0
