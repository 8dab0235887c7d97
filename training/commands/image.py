"""``usfad train image`` and ``usfad bench image``: FastFlow / CFlow / U-Flow with affine, additive or USF."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.families import IMAGE_FAMILIES, IMAGE_FLOW_KINDS
from training.commands.overrides import add_set_option

if TYPE_CHECKING:
    from training.image.folder import FolderLayout

FAMILIES = IMAGE_FAMILIES
FLOWS = IMAGE_FLOW_KINDS
REFERENCES = ("padim", "patchcore")
LAYOUTS = ("auto", "mvtec", "folder")
FOLDER_OPTIONS = ("normal_dir", "abnormal_dir", "mask_dir", "normal_test_dir", "normal_split_ratio")


def _input_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--input-size must look like 160x224, got {text!r}") from error
    return height, width


def _csv(choices: tuple[str, ...]):  # noqa: ANN202 - argparse type factory
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"choose from {', '.join(choices)} (comma-separated), got {text!r}"
            )
        return items

    return parse


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=("cpu", "paper"),
        default=None,
        help="cpu: long side 256, cached features, early stopping within 40 epochs / 5 min "
        "(docs/image-benchmark.md); paper: Appendix E "
        "(default: paper on a GPU, cpu otherwise)",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs (early stopping on validation NLL)")
    parser.add_argument(
        "--long-side", type=int, help="long side of the input; the other keeps the aspect ratio"
    )
    parser.add_argument("--input-size", type=_input_size, help="explicit HxW input size (multiples of 32)")
    parser.add_argument(
        "--backbone",
        help="timm CNN name, or mcait (U-Flow's MS-CaiT, 448x448 input). Default: efficientnet_lite0 "
        "(offline); in the paper profile with --backbone-weights or --allow-download the paper's "
        "per family (resnet18 / wide_resnet50_2 / mcait)",
    )
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        help="ImageNet checkpoint (timm naming; .pth/.pt/.bin/.safetensors) or a folder of them named "
        "<timm name>.pth; mcait: a folder with cait_m48_448.pth and cait_s24_224.pth, or one file "
        "holding {'cait_m48_448': state_dict, 'cait_s24_224': state_dict}",
    )
    parser.add_argument(
        "--allow-download",
        action="store_true",
        help="let timm download the backbone's pretrained weights from the hub",
    )
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="random-init backbone (stamped as 'random-init' in every output)",
    )
    parser.add_argument("--max-train-images", type=int, help="use at most this many training images")
    add_set_option(parser, '--set lr=3e-4 --set model_args=\'{"flow_steps": 4}\' (any training setting)')
    parser.add_argument("--max-test-images", type=int, help="evaluate on at most this many test images")
    parser.add_argument("--max-seconds", type=float, help="time budget per training run")
    layout = parser.add_argument_group(
        "data layout",
        "MVTec (train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png) or anomalib's "
        "folder layout (folders relative to the data root, or absolute)",
    )
    layout.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="auto: folder when --normal-dir is given, mvtec otherwise",
    )
    layout.add_argument("--normal-dir", help="folder layout: normal (good) images")
    layout.add_argument("--abnormal-dir", help="folder layout: defective images (comma-separated folders)")
    layout.add_argument(
        "--mask-dir", help="folder layout: masks named like the defective images (comma-separated folders)"
    )
    layout.add_argument(
        "--normal-test-dir",
        help="folder layout: normal test images (default: a seeded split of --normal-dir)",
    )
    layout.add_argument(
        "--normal-split-ratio",
        type=float,
        help="folder layout without --normal-test-dir: fraction of normal images tested (default 0.2)",
    )


def _backbone_weights(args: argparse.Namespace) -> str:
    from models.image.backbone import MCAIT, MCAIT_NO_WEIGHTS, OFFLINE_BACKBONE

    chosen = [bool(args.backbone_weights), args.allow_download, args.random_init]
    if sum(chosen) > 1:
        raise ValueError(
            "backbone weights: pass only one of --backbone-weights, --allow-download, --random-init"
        )
    if args.backbone_weights:
        return str(args.backbone_weights)
    if args.allow_download:
        return "hub"
    if args.random_init:
        return "random-init"
    if args.backbone == MCAIT:
        raise ValueError(MCAIT_NO_WEIGHTS)
    if args.backbone not in (None, OFFLINE_BACKBONE):
        raise ValueError(
            f"--backbone {args.backbone}: no offline weights; pass --backbone-weights PATH, "
            "--allow-download or --random-init"
        )
    return "offline"


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _folder_layout(args: argparse.Namespace) -> FolderLayout | None:
    """anomalib's folder layout from the options, or None for the MVTec layout."""
    from training.image.folder import FolderLayout

    given = [name for name in FOLDER_OPTIONS if getattr(args, name) is not None]
    layout = args.layout if args.layout != "auto" else ("folder" if given else "mvtec")
    if layout == "mvtec":
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"{flag} belongs to the folder layout; drop it or pass --layout folder")
        return None
    if args.normal_dir is None:
        raise ValueError("--normal-dir: --layout folder needs the folder of normal (good) images")
    return FolderLayout(
        normal_dir=args.normal_dir,
        abnormal_dirs=_split(args.abnormal_dir),
        mask_dirs=_split(args.mask_dir),
        normal_test_dir=args.normal_test_dir,
        normal_split_ratio=0.2 if args.normal_split_ratio is None else args.normal_split_ratio,
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    weights = _backbone_weights(args)
    if weights != "hub":
        # Nothing may reach the network unless the user asked for the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in ("epochs", "long_side", "max_train_images", "max_test_images"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return {
        "epochs": args.epochs,
        "long_side": args.long_side,
        "input_size": args.input_size,
        "backbone": args.backbone,
        "backbone_weights": weights,
        "max_train_images": args.max_train_images,
        "max_test_images": args.max_test_images,
        "max_seconds": args.max_seconds,
        "folder_layout": _folder_layout(args),
        **dict(getattr(args, "overrides", [])),  # --set KEY=VALUE, the style shared with train tabular
    }


def _default_profile(args: argparse.Namespace) -> str:
    if args.profile:
        return args.profile
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


def _run_guarded(function, args: argparse.Namespace) -> int:  # noqa: ANN001
    """Run a handler; bad input becomes one clear error line and exit code 2."""
    try:
        return function(args)
    except (ValueError, KeyError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"usfad: error: {message}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    from training.image.train import train_image_run

    run_dir = train_image_run(
        args.data,
        args.model,
        args.flow,
        args.out,
        profile=_default_profile(args),
        seed=args.seed,
        **_overrides(args),
    )
    from training.runs import read_run

    run = read_run(run_dir)
    fit, metrics = run["fit"], run["metrics"]
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if isinstance(v, float))
    if run.get("backbone_note"):
        print(f"note: {run['backbone_note']}")
    print(
        f"saved {run_dir}: {run['family']}-{run['flow']} on {run['backbone']} [{run['profile']} profile], "
        f"{fit['epochs_run']} epochs ({fit['stop_reason']}); {shown}"
    )
    return 1 if fit["failed"] else 0


def _bench(args: argparse.Namespace) -> int:
    import logging

    from training.image.bench import run_image_bench

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.seeds <= 0:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    out = run_image_bench(
        args.data_dir,
        args.out,
        models=args.models,
        flows=args.flows,
        seeds=args.seeds,
        references=args.references,
        report_only=args.report_only,
        profile=_default_profile(args),
        **_overrides(args),
    )
    print(f"wrote {out}: results.csv, tables.md, ablation.png, overlays/ (runs/ holds every run directory)")
    return 0


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``usfad train image`` and ``usfad bench image``."""
    train = groups["train"].add_parser(
        "image",
        help="train FastFlow / CFlow / U-Flow with affine, additive or USF flows",
        description="Train one image anomaly detector on the good images of one category "
        "(MVTec layout or anomalib's folder layout).",
    )
    train.add_argument(
        "--data",
        required=True,
        type=Path,
        help="category folder (MVTec: train/good, test/, ground_truth/; folder layout: the root)",
    )
    train.add_argument("--model", required=True, choices=FAMILIES)
    train.add_argument("--flow", required=True, choices=FLOWS)
    train.add_argument("--out", required=True, type=Path, help="run directory to write")
    train.add_argument("--seed", type=int, default=0)
    _add_common(train)
    train.set_defaults(handler=lambda args: _run_guarded(_train, args))

    bench = groups["bench"].add_parser(
        "image",
        help="the image grid: families x flows x seeds (+ PaDiM, PatchCore) on every category",
        description="Benchmark image detectors like the paper's Tables 1-5 and Figure 4.",
    )
    bench.add_argument(
        "--data-dir",
        required=True,
        type=Path,
        help="folder of MVTec-layout categories (or one), or the root of one folder-layout category",
    )
    bench.add_argument("--models", type=_csv(FAMILIES), default=list(FAMILIES))
    bench.add_argument("--flows", type=_csv(FLOWS), default=list(FLOWS))
    bench.add_argument(
        "--references",
        type=_csv(REFERENCES),
        default=list(REFERENCES),
        help="reference detectors run on the same backbone, size and splits",
    )
    bench.add_argument("--no-references", dest="references", action="store_const", const=[])
    bench.add_argument("--seeds", type=int, default=3)
    bench.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing; rewrite tables and plots from finished runs",
    )
    bench.add_argument("--out", required=True, type=Path)
    _add_common(bench)
    bench.set_defaults(handler=lambda args: _run_guarded(_bench, args))
