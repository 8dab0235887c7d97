"""Render a finished (or partial) ``bench image`` results.csv as the markdown summary table.

``python -m training.image.render OUT/results.csv`` prints Table 1 (mean ± std over seeds of
image AUROC, pixel AUROC, AUPRO; training time per model; scoring time per image; seeds
finished), columns in the order families × flows, then the references, so the numbers in the
docs come straight from the benchmark's output file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from training.image.report import summary_table

REFERENCE_ORDER = ("padim", "patchcore")


def ordered_columns(results: pd.DataFrame) -> list[str]:
    """Flow columns (by family, then affine / additive / usf), then PaDiM and PatchCore."""
    flows = results[results["flow"].notna()]
    flow_rank = {"affine": 0, "additive": 1, "usf": 2}
    columns = sorted(
        set(flows["column"]),
        key=lambda c: (c.rsplit("-", 1)[0], flow_rank.get(c.rsplit("-", 1)[-1], 9)),
    )
    return columns + [r for r in REFERENCE_ORDER if r in set(results["column"])]


def render(path: str | Path) -> str:
    """Markdown of one results.csv, one summary table per category."""
    results = pd.read_csv(path)
    parts = []
    for category, group in results.groupby("category"):
        parts.append(f"**{category}** (seeds finished per model: last row)\n")
        parts.append(summary_table(group, ordered_columns(group)))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results.csv written by `usfad bench image`")
    print(render(parser.parse_args(argv).results), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
