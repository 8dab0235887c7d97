"""Render measured tables into the docs from a benchmark's output files, so numbers cannot drift.

A rendered table sits between two markers in a docs page::

    <!-- table NAME: rendered by docs/render_tables.py from ...; do not edit by hand -->
    | model | ... |
    <!-- /table NAME -->

Usage (from the repository root)::

    python docs/render_tables.py tabular --page docs/tabular.md --name tabular-paper \\
        bench-tabular bench-tabular-dohsc [--bold usflow] [--check]

``tabular`` reads ``results*.csv`` (one row per data set × model × seed) and ``bench.json`` of
every ``usfad bench tabular --out`` folder given, in order; when two folders hold rows of the
same model, the later folder's rows replace the earlier ones (a rerun of some models into a
folder of its own). The table is the benchmark's own summary (``training.tabular.report``:
the same function that writes ``summary.md``). ``--check`` writes nothing and exits 1 when the
page differs from what the outputs give.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without installing

from training.tabular.report import markdown_table, summarize  # noqa: E402

MARKER = "<!-- table {name}:"
END = "<!-- /table {name} -->"


def tabular_rows(folders: list[Path]) -> tuple[list[dict[str, str]], list[str]]:
    """Result rows and model order of the bench folders; later folders replace a model's rows."""
    from training.tabular.bench import read_results

    rows: list[dict[str, str]] = []
    models: list[str] = []
    for folder in folders:
        found = read_results(folder)
        if not found:
            raise FileNotFoundError(f"{folder}: no results*.csv (the --out folder of `usfad bench tabular`)")
        replaced = {row["model"] for row in found}
        rows = [row for row in rows if row["model"] not in replaced] + found
        models += [model for model in dict.fromkeys(row["model"] for row in found) if model not in models]
    return rows, models


def tabular_table(folders: list[Path], bold: str | None = None) -> str:
    """The summary table of ``usfad bench tabular`` for the rows of ``folders``."""
    rows, models = tabular_rows(folders)
    summaries, common = summarize(rows, models)
    table = markdown_table(summaries, len(common))
    if bold:
        table = re.sub(
            rf"^\| {re.escape(bold)} \| ([^|]+?) \|",
            lambda m: f"| **{bold}** | **{m.group(1)}** |",
            table,
            flags=re.MULTILINE,
        )
    return table


def replace_between_markers(page: str, name: str, table: str, source: str) -> str:
    """``page`` with the block of table ``name`` replaced by ``table`` (the markers must exist)."""
    start = page.find(MARKER.format(name=name))
    end = page.find(END.format(name=name))
    if start < 0 or end < start:
        begin, finish = MARKER.format(name=name), END.format(name=name)
        raise ValueError(f"no markers for table {name!r}: add '{begin} ... -->' and '{finish}' to the page")
    head = f"{MARKER.format(name=name)} rendered by docs/render_tables.py from {source}; do not edit by hand"
    head += " -->"
    return page[:start] + head + "\n" + table + "\n" + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("tabular",), help="which benchmark's outputs to read")
    parser.add_argument("folders", nargs="+", type=Path, help="the benchmark's --out folder(s)")
    parser.add_argument("--page", required=True, type=Path, help="docs page holding the markers")
    parser.add_argument("--name", required=True, help="table name in the markers")
    parser.add_argument("--bold", default=None, help="model whose row is set in bold")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the page is stale")
    args = parser.parse_args(argv)
    table = tabular_table(args.folders, args.bold)
    source = " + ".join(f"{folder.name}/results*.csv" for folder in args.folders)
    page = args.page.read_text()
    rendered = replace_between_markers(page, args.name, table, source)
    if args.check:
        if rendered != page:
            print(f"{args.page}: table {args.name!r} differs from {source}", file=sys.stderr)
            return 1
        print(f"{args.page}: table {args.name!r} matches {source}")
        return 0
    args.page.write_text(rendered)
    print(f"wrote table {args.name!r} into {args.page} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
