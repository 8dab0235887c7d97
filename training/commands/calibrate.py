"""Commands of the calibration area: ``usfad calibrate`` and ``usfad bench calibration``."""

from __future__ import annotations

import argparse
import sys

from training.commands.bundle_options import add_bundle_output_arguments, default_fpr_error


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``calibrate`` (top level) and ``bench calibration``."""
    calibrate = groups["root"].add_parser(
        "calibrate",
        help="recalibrate a bundle's p-values on new normal data, without retraining",
        description="Score normal data with the bundle (the service's loader and decoding) and write a new "
        "bundle version whose conformal calibration are those scores (docs/calibration.md); for "
        "images also the maxima of the returned anomaly maps, which map=mask is cut from. "
        "Without --out the bundle is updated in place, atomically: a served bundle is hot-reloaded.",
        epilog="example:\n  usfad calibrate bundles/cardio-usflow --data ../shared/data/adbench/6_cardio.npz",
    )
    calibrate.add_argument("bundle_dir", metavar="BUNDLE_DIR")
    calibrate.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="NORMAL_DATA",
        help="tabular: one .csv/.npz (rows labelled 1 are dropped); image: good image files or folders",
    )
    add_bundle_output_arguments(calibrate, False, "write a new bundle here (default: update BUNDLE_DIR)")
    calibrate.add_argument("--label-column", default=None, help="CSV column with 0/1 labels")
    calibrate.set_defaults(handler=run_calibrate)

    bench = groups["bench"].add_parser(
        "calibration",
        help="false-alarm rates at requested fpr: conformal p-values vs the 99%% quantile threshold",
        description="Trains each family on the ADBench sets x seeds (paper split, row cap), and reports per "
        "set the observed false-alarm rate on test normals at fpr 1%% and 5%%, the binomial 99%% "
        "interval, n calibration, the old 99%%-quantile threshold side by side, and the chi2 "
        "p-value's distance from the conformal one.",
        epilog="example:\n  usfad bench calibration --datasets 6_cardio 29_Pima --seeds 0 --out bench-cal",
    )
    from training.calibration_bench import add_arguments

    add_arguments(bench)
    bench.set_defaults(handler=run_bench)


def run_calibrate(args: argparse.Namespace) -> int:
    """Handler of ``usfad calibrate``."""
    from service.errors import BundleError, InputError
    from training.recalibrate import calibrate_bundle

    if message := default_fpr_error(args.default_fpr):
        print(f"error: {message}", file=sys.stderr)
        return 2
    from training import progress

    try:
        with progress.elapsed(f"calibrate {args.bundle_dir}"):
            manifest = calibrate_bundle(
                args.bundle_dir, args.data, args.out, args.default_fpr, args.label_column, args.overwrite
            )
    except (BundleError, InputError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    section = manifest["calibration"]
    print(
        f"wrote {args.out or args.bundle_dir}: {manifest['name']} {manifest['version']} "
        f"(n = {section['n']}, default fpr {section['default_fpr']:.3g}, min fpr {section['min_fpr']:.3g})"
    )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``usfad bench calibration``."""
    from training.calibration_bench import run_calibration_bench

    return run_calibration_bench(args)
