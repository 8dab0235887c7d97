"""Arguments of ``usfad bench export`` (argparse only: the CLI must start without torch)."""

from __future__ import annotations

import argparse

from models.families import TABULAR_FAMILIES

DEFAULT_DATA = "../shared/data/adbench/6_cardio.npz"
DEFAULT_TABULAR_FAMILIES = ",".join(TABULAR_FAMILIES)
DEFAULT_IMAGE_DATA = "../shared/data/images/magnetic_tile"


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the export benchmark."""
    parser.add_argument("--data", default=DEFAULT_DATA, help="ADBench .npz used to train and as inputs")
    parser.add_argument("--families", default=DEFAULT_TABULAR_FAMILIES, help="tabular families to measure")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per model (speed only)")
    parser.add_argument("--batches", default="1,32", help="batch sizes to time")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timing budget per measurement (all runners)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="threads for both PyTorch and ONNX Runtime")
    parser.add_argument(
        "--image-families", default="fastflow,cflow,uflow", help="image families to train briefly and time"
    )
    parser.add_argument("--image-flows", default="usf,affine", help="flow variants of each image family")
    parser.add_argument("--image-data", default=DEFAULT_IMAGE_DATA, help="MVTec-layout category folder")
    parser.add_argument("--image-epochs", type=int, default=1, help="training epochs per image model")
    parser.add_argument("--image-train-images", type=int, default=16, help="training images per image model")
    parser.add_argument(
        "--image-runs",
        nargs="*",
        default=[],
        metavar="RUN_DIR",
        help="existing image run directories to export and time as well",
    )
    parser.add_argument("--work-dir", default=None, help="keep runs and bundles here (default: a temp dir)")
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
