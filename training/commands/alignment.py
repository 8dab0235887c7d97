"""``usfad experiment alignment``: the latent alignment experiment (paper, Section 4.3, Appendices C–D)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MODEL_CHOICES = ("DeepSVDD", "NonUSFlow", "USFlow")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one dimension")
    for value in values:
        if value < 2 or value % 2:
            raise argparse.ArgumentTypeError(f"every dimension must be an even integer >= 2, got {value}")
    return values


def _model_list(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in MODEL_CHOICES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"models must be among {', '.join(MODEL_CHOICES)}; got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``usfad experiment alignment`` to the parser."""
    parser = groups["experiment"].add_parser(
        "alignment",
        help="latent alignment: Deep SVDD vs NonUSFlow vs USFlow on the asymmetric Gaussian mixture",
        description=(
            "Random-search each model per dimension (selected by validation loss), then report Spearman "
            "rho / Kendall tau between the true log-likelihood and the latent norm (and, for flows, the "
            "estimated log-likelihood) on held-out samples; writes tables and figures into OUT."
        ),
    )
    parser.add_argument("--dims", type=_int_list, default=(2, 8, 32, 128), help="e.g. 2,8,32,128")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--models", type=_model_list, default=MODEL_CHOICES, help="subset of the three models"
    )
    parser.add_argument(
        "--configs", type=_positive_int, default=10, help="random-search trials per model and d"
    )
    parser.add_argument(
        "--samples",
        type=_positive_int,
        default=20000,
        help="training samples; validation and test get N/8 each (at least 50, at most 2500)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=60, help="maximum epochs per trial")
    parser.add_argument("--patience", type=_positive_int, default=5, help="early-stopping patience (epochs)")
    parser.add_argument(
        "--seconds-per-run",
        type=_positive_float,
        default=36.0,
        help="wall-clock cap of one trial's training at d=128; d gets (1 + log2 d)/8 of it",
    )
    parser.add_argument(
        "--no-time-cap",
        action="store_true",
        help="train every trial to --epochs / early stopping (reproducible)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads")
    parser.set_defaults(handler=run_alignment_command)


def run_alignment_command(args: argparse.Namespace) -> int:
    """Build the configuration from ``args`` and run the experiment."""
    import torch

    from training.experiments.alignment.experiment import run_alignment
    from training.experiments.alignment.space import AlignmentConfig

    if args.out.exists() and not args.out.is_dir():
        print(
            f"usfad experiment alignment: error: --out {args.out} exists and is not a folder", file=sys.stderr
        )
        return 2
    holdout = min(max(args.samples // 8, 50), 2500)
    try:
        config = AlignmentConfig(
            dims=args.dims,
            models=args.models,
            configs_per_model=args.configs,
            n_train=args.samples,
            n_val=holdout,
            n_test=holdout,
            epochs=args.epochs,
            patience=args.patience,
            seconds_per_run=None if args.no_time_cap else args.seconds_per_run,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"usfad experiment alignment: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = run_alignment(config, args.out, log=lambda line: print(line, flush=True))
    print(f"wrote results for {len(rows)} (dimension, model) pairs to {args.out}")
    return 0
