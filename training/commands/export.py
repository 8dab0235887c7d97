"""Commands of this area (being written)."""

from __future__ import annotations

import argparse


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    """Add this area's commands to the ``usfad`` parser."""
