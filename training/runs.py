"""Run directories: what ``usfad train`` writes and ``usfad export`` reads (docs/contracts.md).

The files themselves are read and written by :mod:`training.run_files` (re-exported here);
this module adds :func:`load_scorer`, which dispatches to the loader of the run's kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from training.run_files import (
    RUN_FILE,
    WEIGHTS_FILE,
    fingerprint_array,
    load_weights,
    read_run,
    save_run,
    utc_now,
)

__all__ = [
    "RUN_FILE",
    "WEIGHTS_FILE",
    "fingerprint_array",
    "load_scorer",
    "load_weights",
    "read_run",
    "save_run",
    "utc_now",
]


def load_scorer(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the exportable scorer of any run (tabular or image) in eval mode."""
    run = read_run(run_dir)
    if run.get("kind") == "tabular":
        from training.tabular.run import load_tabular_scorer

        scorer = load_tabular_scorer(run_dir, run)
    elif run.get("kind") == "image":
        from training.image.run import load_image_scorer

        scorer = load_image_scorer(run_dir, run)
    else:
        raise ValueError(f"{run_dir}/run.json has unknown kind {run.get('kind')!r}")
    return scorer.eval(), run
