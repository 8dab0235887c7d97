"""``--set KEY=VALUE``: the one override style of ``usfad train tabular`` and ``usfad train image``.

Values are read as JSON when they parse (numbers, lists, objects, ``null``), else as text.
The image commands' typed flags (``--epochs``, ``--long-side`` …) are shortcuts for the same
settings; a ``--set`` of the same key wins.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value``, the value read as JSON when it parses: ``hidden=[64,64]`` → ``("hidden", [64, 64])``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def add_set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` (collected as a list of pairs in ``overrides``)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=parse_override,
        default=[],
        metavar="KEY=VALUE",
        help=f"override a default, e.g. {example} (repeatable)",
    )
