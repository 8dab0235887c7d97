"""The options of the commands that write a bundle: ``usfad export`` and ``usfad calibrate``."""

from __future__ import annotations

import argparse

from service.calibration import DEFAULT_FPR


def add_bundle_output_arguments(parser: argparse.ArgumentParser, out_required: bool, out_help: str) -> None:
    """``--out BUNDLE_DIR``, ``--overwrite`` and ``--default-fpr`` (checked by ``default_fpr_error``)."""
    parser.add_argument("--out", required=out_required, default=None, metavar="BUNDLE_DIR", help=out_help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument(
        "--default-fpr",
        type=float,
        default=DEFAULT_FPR,
        help="false-alarm rate the service decides at by default (raised to 1/(n+1) if n cannot certify it)",
    )


def default_fpr_error(value: float) -> str | None:
    """The message for a ``--default-fpr`` outside (0, 1), else ``None``."""
    return None if 0 < value < 1 else "--default-fpr must lie strictly between 0 and 1"
