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
)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``usfad`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error("no command given")
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
