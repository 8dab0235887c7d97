"""``docs/render_tables.py``: docs tables rendered from a real ``usfad bench tabular`` output folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from training.cli import main
from training.tabular.bench import read_results
from training.tabular.report import markdown_table, summarize

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "render_tables.py"


def _script():  # noqa: ANN202 - the module object
    spec = importlib.util.spec_from_file_location("render_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(folder: Path) -> Path:
    """Two small ADBench-format sets: normal rows N(0, I), anomalies shifted by 3."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, rows in (("1_a", 160), ("2_b", 120)):
        y = (rng.random(rows) < 0.15).astype(np.int64)
        x = rng.normal(size=(rows, 4)) + 3.0 * y[:, None]
        np.savez(folder / f"{name}.npz", X=x, y=y)
    return folder


@pytest.fixture(scope="module")
def benches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("render")
    data = _data(root / "data")
    first, rerun = root / "bench", root / "bench-rerun"
    bench = ["bench", "tabular", "--data-dir", str(data)]
    assert main([*bench, "--models", "knn,iforest", "--seeds", "2", "--out", str(first)]) == 0
    assert main([*bench, "--models", "iforest", "--seeds", "1", "--out", str(rerun)]) == 0
    return first, rerun


def test_renders_the_benchmarks_own_summary_between_the_markers(
    benches: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = benches
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- table t: old -->\n| stale |\n<!-- /table t -->\nafter\n")
    render = _script()
    args = ["tabular", str(first), "--page", str(page), "--name", "t", "--bold", "knn"]
    assert render.main(args) == 0
    text = page.read_text()
    rows = read_results(first)
    summaries, common = summarize(rows, ["knn", "iforest"])
    expected = markdown_table(summaries, len(common))
    assert text.startswith("before\n<!-- table t: rendered by docs/render_tables.py from bench/results*.csv")
    assert text.endswith("\n<!-- /table t -->\nafter\n") and "| stale |" not in text
    knn = next(line for line in expected.splitlines() if line.startswith("| knn |")).split(" | ")
    assert " | ".join(["| **knn**", f"**{knn[1]}**", *knn[2:]]) in text  # --bold: name and mean
    for line in expected.splitlines():
        if not line.startswith("| knn |"):
            assert line in text
    assert render.main([*args, "--check"]) == 0
    page.write_text(text.replace("| iforest | ", "| iforest | 1", 1))  # a hand edit of a number
    assert render.main([*args, "--check"]) == 1


def test_a_later_folder_replaces_that_models_rows(benches: tuple[Path, Path]) -> None:
    first, rerun = benches
    rows, models = _script().tabular_rows([first, rerun])
    assert models == ["knn", "iforest"]
    assert sorted({r["seed"] for r in rows if r["model"] == "iforest"}) == ["0"]
    assert sorted({r["seed"] for r in rows if r["model"] == "knn"}) == ["0", "1"]


def test_missing_markers_or_outputs_are_named(benches: tuple[Path, Path], tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    render = _script()
    with pytest.raises(ValueError, match="no markers for table 'x'"):
        render.main(["tabular", str(benches[0]), "--page", str(page), "--name", "x"])
    with pytest.raises(FileNotFoundError, match="no results"):
        render.main(["tabular", str(tmp_path), "--page", str(page), "--name", "x"])
