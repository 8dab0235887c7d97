"""Commands of the export area: ``usfad export``, ``usfad score``, ``usfad bench export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.commands.bundle_options import add_bundle_output_arguments, default_fpr_error


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add ``export`` and ``score`` (top level) and ``bench export`` to the ``usfad`` parser."""
    export = groups["root"].add_parser(
        "export",
        help="export a run directory to a model bundle (ONNX + TorchScript + manifest)",
        description="Export a trained run to a self-describing bundle: model.onnx and model.pt take raw "
        "inputs (rows in original units, or uint8 NxHxWxC images) and return score, nll "
        "(and anomaly_map); manifest.json lists the input spec, threshold and file sha256s.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `usfad train`")
    add_bundle_output_arguments(export, True, "bundle folder to write")
    export.add_argument("--format", default="onnx,torchscript", help="comma-separated: onnx, torchscript")
    export.add_argument("--name", default=None, help="model name (default: the --out folder name)")
    export.set_defaults(handler=run_export)

    score = groups["root"].add_parser(
        "score",
        help="score CSV/NPZ rows or image files with a bundle, offline (ONNX Runtime, CPU)",
        description="Score inputs with a bundle through the service's loader (checksums verified). "
        "Writes id,score,nll,anomalous[,map_max][,label] as CSV.",
    )
    score.add_argument("bundle_dir", metavar="BUNDLE_DIR")
    score.add_argument(
        "--input", required=True, nargs="+", metavar="FILE", help="a .csv/.npz file, or image files / folders"
    )
    score.add_argument(
        "--output", default=None, metavar="FILE.csv", help="write the table here (default: stdout)"
    )
    score.add_argument(
        "--label-column", default=None, help="CSV column with 0/1 labels (reported, not scored)"
    )
    score.add_argument(
        "--maps-out", default=None, metavar="FILE.npz", help="image bundles: save anomaly maps"
    )
    score.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    score.set_defaults(handler=run_score)

    bench = groups["bench"].add_parser(
        "export",
        help="ONNX Runtime vs PyTorch eager throughput, and USF vs affine flows in ONNX Runtime",
        description="Trains tiny models of each family on real data, exports them, and prints throughput "
        "ratios measured side by side on the same inputs.",
    )
    from training.export.bench_config import add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(handler=run_bench)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``usfad export``."""
    from training import progress
    from training.export.writer import ExportError, export_bundle

    try:
        if message := default_fpr_error(args.default_fpr):
            raise ExportError(message)
        with progress.elapsed(f"export {args.run_dir} (trace, ONNX, parity check)"):
            manifest = export_bundle(
                args.run_dir, args.out, args.format, args.name, args.overwrite, args.default_fpr
            )
    except (ExportError, FileNotFoundError) as error:
        return _fail(str(error))
    files = ", ".join(manifest["files"])
    print(f"wrote {Path(args.out)}: {manifest['name']} {manifest['version']} ({manifest['kind']}, {files})")
    return 0


def run_score(args: argparse.Namespace) -> int:
    """Handler of ``usfad score``."""
    import numpy as np

    from service.errors import BundleError, InputError
    from training.export.offline_score import score_files

    if args.threads < 0:
        return _fail("--threads must be 0 (all cores) or positive")
    try:
        bundle, table = score_files(
            args.bundle_dir, args.input, args.label_column, args.maps_out is not None, args.threads
        )
    except (BundleError, InputError) as error:
        return _fail(str(error))
    text = table.to_csv()
    try:
        if args.output:
            Path(args.output).write_text(text)
        else:
            sys.stdout.write(text)
        if args.maps_out and table.maps is not None:
            np.savez_compressed(args.maps_out, ids=np.array(table.ids), anomaly_map=table.maps)
    except OSError as error:
        return _fail(f"--output / --maps-out: cannot write ({error})")
    summary = (
        f"{bundle.name} {bundle.version}: {len(table.ids)} inputs, {int(table.anomalous.sum())} above the "
        f"threshold {table.threshold:.6g}"
    )
    auroc = table.auroc()
    if auroc is not None:
        summary += f", AUROC {auroc:.4f} against the labels"
    print(summary, file=sys.stderr)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Handler of ``usfad bench export``."""
    from training.export.bench import run_export_bench

    try:
        return run_export_bench(args)
    except (ValueError, FileNotFoundError) as error:
        return _fail(str(error))
