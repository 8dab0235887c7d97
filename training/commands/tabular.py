"""``usfad train tabular`` and ``usfad bench tabular``."""

from __future__ import annotations

import argparse
import json
import sys

from models.families import TABULAR_FAMILIES
from training.commands.overrides import add_set_option

TORCH_MODELS = ", ".join(TABULAR_FAMILIES)
DEFAULT_BENCH_MODELS = "usflow,nonusflow,deep_svdd,oneflow,dohsc,knn,iforest"


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add this area's commands to the ``usfad`` parser."""
    train = groups["train"].add_parser(
        "tabular",
        help="train one one-class model on normal rows (.npz or .csv) and save a run directory",
        description="Train one tabular one-class detector on normal data and save it with its "
        "standardisation and threshold (99th percentile of held-out normal scores).",
    )
    train.add_argument("--data", required=True, help="ADBench-style .npz (X, y) or .csv with a header row")
    train.add_argument("--model", default="usflow", help=f"one of: {TORCH_MODELS}")
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument(
        "--label-column", default=None, help="CSV column with 0/1 labels; rows with 1 are dropped"
    )
    train.add_argument("--seed", type=int, default=0)
    add_set_option(train, "--set epochs=20 --set hidden=[64,64]")
    train.set_defaults(handler=train_handler)

    bench = groups["bench"].add_parser(
        "tabular",
        help="benchmark models on every ADBench .npz in a folder (paper protocol)",
        description="70/30 split per seed, anomalies removed from training, standardisation with "
        "training statistics, AUC-ROC on the test part. Resumes an interrupted run in --out.",
    )
    bench.add_argument("--data-dir", default=None, help="folder of ADBench .npz files (required to run)")
    bench.add_argument(
        "--models", default=DEFAULT_BENCH_MODELS, help=f"comma list of: {TORCH_MODELS}, knn, iforest"
    )
    bench.add_argument("--seeds", type=int, default=3, help="number of seeds (0 .. N-1)")
    bench.add_argument("--out", required=True, help="output folder (results.csv, summary, PNGs)")
    bench.add_argument(
        "--profile",
        choices=("paper", "cpu"),
        default="paper",
        help="paper: the paper protocol; cpu: fewer epochs, time cap and row cap (NOT the paper protocol)",
    )
    bench.add_argument(
        "--max-train-rows", type=int, default=None, help="cap training rows (overrides the profile)"
    )
    bench.add_argument("--datasets", default=None, help="comma list of file stems to run (default: all)")
    bench.add_argument("--report-only", action="store_true", help="only rewrite the summary and figures")
    bench.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="run part K (0-based) of N disjoint parts of the grid into its own CSV (N parallel processes)",
    )
    bench.set_defaults(handler=bench_handler)


def train_handler(args: argparse.Namespace) -> int:
    """Train one model; exit code 2 on bad input, 1 when training failed."""
    from training.tabular.data import TabularDataError, load_table
    from training.tabular.train import TrainingFailedError, train_tabular_run

    try:
        data = load_table(args.data, args.label_column)
        x = data.x
        if data.y is not None:
            dropped = int(data.y.sum())
            x = data.x[data.y == 0]
            print(f"dropped {dropped} labelled anomalies; training on {len(x)} normal rows", file=sys.stderr)
        out = train_tabular_run(
            x,
            args.model,
            args.out,
            feature_names=data.feature_names,
            seed=args.seed,
            overrides=dict(args.overrides),
            source=str(args.data),
        )
    except (TabularDataError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingFailedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    run = json.loads((out / "run.json").read_text())
    print(
        f"saved {out}: {run['family']} on {run['training_data']['rows']} rows, "
        f"{run['fit']['epochs_run']} epochs ({run['fit']['stop_reason']}), "
        f"threshold {run['threshold']['score']:.4g}"
    )
    return 0


def bench_handler(args: argparse.Namespace) -> int:
    """Run (or resume) the tabular benchmark, then write the summary and figures."""
    from training.tabular.bench import PROFILES, BenchSettings, list_datasets, run_benchmark, select_datasets
    from training.tabular.classical import CLASSICAL_MODELS
    from training.tabular.report import write_report

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in TABULAR_FAMILIES and m not in CLASSICAL_MODELS]
    if unknown or not models:
        print(
            f"error: --models: unknown {unknown}; choose from {TORCH_MODELS}, knn, iforest", file=sys.stderr
        )
        return 2
    if args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    if args.max_train_rows is not None and args.max_train_rows < 2:
        print("error: --max-train-rows must be at least 2", file=sys.stderr)
        return 2
    shard = None
    if args.shard is not None:
        try:
            k, n = (int(part) for part in args.shard.split("/"))
        except ValueError:
            k, n = -1, 0
        if not 0 <= k < n:
            print(f"error: --shard expects K/N with 0 <= K < N, got {args.shard!r}", file=sys.stderr)
            return 2
        shard = (k, n)
    if not args.report_only and args.data_dir is None:
        print("error: --data-dir is required (unless --report-only)", file=sys.stderr)
        return 2
    outputs = "results*.csv, summary.md, summary.csv, per_dataset_auc.csv, boxplot_auc.png, pairwise_wins.png"
    try:
        if not args.report_only:
            files = list_datasets(args.data_dir)
            names = args.datasets.split(",") if args.datasets else None
            profile = PROFILES[args.profile]
            cap = args.max_train_rows if args.max_train_rows is not None else profile.max_train_rows
            settings = BenchSettings(
                data_dir=str(args.data_dir),
                datasets=select_datasets(files, names),
                models=models,
                seeds=list(range(args.seeds)),
                profile=profile.name,
                description=profile.description,
                overrides=dict(profile.overrides),
                max_train_rows=cap,
            )
            run_benchmark(settings, args.out, shard=shard)
        print(write_report(args.out))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {outputs}")
    return 0
