"""The ``usfad`` command line.

This module imports only ``argparse``: every command lives in a module of
``training.commands`` that registers its arguments and imports its heavy dependencies (torch,
anomalib, the service) only when it runs. ``usfad serve`` and ``usfad worker`` hand the process
over to ``python -m service`` so that serving processes never import training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module defines ``register(groups)``; ``groups`` maps a group name to the argparse
# sub-parser collection to add commands to.
COMMAND_MODULES: tuple[str, ...] = (
    "training.commands.tabular",
    "training.commands.image",
    "training.commands.alignment",
    "training.commands.export",
    "training.commands.serve",
    "training.commands.calibrate",
)


# One runnable example per command, shown at the end of its ``--help`` (data paths are the
# default USFAD_DATA_DIR layout, ../shared/data beside the repository).
EXAMPLES: dict[str, str] = {
    "": "usfad serve --demo",
    "train": "usfad train tabular --data ../shared/data/adbench/6_cardio.npz --out runs/cardio-usflow",
    "train tabular": "usfad train tabular --data ../shared/data/adbench/6_cardio.npz --model usflow "
    "--out runs/cardio-usflow --set epochs=20",
    "train image": "usfad train image --data ../shared/data/images/magnetic_tile --model fastflow --flow usf "
    "--out runs/tile-ff --epochs 3 --max-train-images 64",
    "bench": "usfad bench tabular --data-dir ../shared/data/adbench --datasets 6_cardio --seeds 1 "
    "--out bench-tabular",
    "bench tabular": "usfad bench tabular --data-dir ../shared/data/adbench --datasets 6_cardio,29_Pima "
    "--models usflow,knn --seeds 1 --out bench-tabular",
    "bench image": "usfad bench image --data-dir ../shared/data/images --seeds 3 --out bench-image",
    "bench export": "usfad bench export --output bench-export.json",
    "bench serve": "usfad bench serve --model-dir ~/.cache/usfad/demo/bundles --model demo-tabular "
    "--spawn embedded",
    "experiment": "usfad experiment alignment --dims 2,4 --configs 2 --samples 400 --epochs 3 "
    "--out runs/alignment-smoke",
    "experiment alignment": "usfad experiment alignment --dims 2,4 --configs 2 --samples 400 --epochs 3 "
    "--out runs/alignment-smoke",
    "export": "usfad export runs/cardio-usflow --out bundles/cardio-usflow",
    "score": "usfad score bundles/cardio-usflow --input ../shared/data/adbench/6_cardio.npz "
    "--output scores.csv",
    "serve": "usfad serve --model-dir bundles",
    "worker": "usfad worker --redis-url redis://127.0.0.1:6379/0 --model-dir bundles",
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an ``example:`` epilog keeps its lines (copy-pasteable)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def commands(parser: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command parser by its path, e.g. ``"bench tabular"``; ``""`` is ``usfad`` itself."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(commands(child, f"{path} {name}".strip()))
    return found


def _add_examples(parser: argparse.ArgumentParser) -> None:
    """Give every command an ``example:`` epilog (unless its module set its own epilog)."""
    for path, command in commands(parser).items():
        command.formatter_class = _HelpFormatter
        if command.epilog is None and path in EXAMPLES:
            command.epilog = f"example:\n  {EXAMPLES[path]}"


def build_parser() -> argparse.ArgumentParser:
    """The full ``usfad`` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="usfad",
        description="Anomaly detection with uniformly scaling flows: train, benchmark, export, serve.",
    )
    root = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {"root": root}
    for name, help_text in (
        ("train", "train one model and save a run directory"),
        ("bench", "benchmarks: tabular, image, export, serve"),
        ("experiment", "the paper's experiments (alignment)"),
    ):
        group_parser = root.add_parser(name, help=help_text, description=help_text)
        groups[name] = group_parser.add_subparsers(dest=f"{name}_command", metavar="KIND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(groups)
    _add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``usfad`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `usfad serve` passes it on
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error("no command given")
    from training import progress

    with progress.enabled():
        result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
