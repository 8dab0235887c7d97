"""Benchmark tables (paper's Tables 1–5 layout) and the ablation plot (Figure 4)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.image


def _results() -> pd.DataFrame:
    rows = []
    for category, shift in (("tile", 0.0), ("screw", -5.0)):
        for flow, base, spread in (("affine", 80.0, 4.0), ("additive", 82.0, 1.0), ("usf", 84.0, 0.5)):
            for seed in range(3):
                value = base + shift + spread * (seed - 1)
                rows.append(
                    {
                        "category": category,
                        "model": "fastflow",
                        "flow": flow,
                        "column": f"fastflow-{flow}",
                        "seed": seed,
                        "image_auroc": value,
                        "pixel_auroc": value + 10,
                        "aupro": value - 20,
                        "epochs_run": 4 + seed,
                        "stop_reason": "early stop",
                        "failed": False,
                    }
                )
        for seed in range(3):
            rows.append(
                {
                    "category": category,
                    "model": "padim",
                    "flow": None,
                    "column": "padim",
                    "seed": seed,
                    "image_auroc": 83.0 + shift,
                    "pixel_auroc": 99.0,
                    "aupro": 70.0,
                    "epochs_run": 1,
                    "stop_reason": "single pass",
                    "failed": False,
                }
            )
    return pd.DataFrame(rows)


def test_tables_mark_the_best_and_report_mean_and_std(tmp_path: Path) -> None:
    from training.image.report import write_tables

    columns = ["fastflow-affine", "fastflow-additive", "fastflow-usf", "padim"]
    path = tmp_path / "tables.md"
    write_tables(_results(), columns, "# header", path)
    text = path.read_text()
    summary = next(line for line in text.splitlines() if line.startswith("| mean over categories (Image"))
    # category means: usf 81.5 (best), padim 80.5 (second); std over seeds of the category mean.
    assert "**81.5±0.5**" in summary and "<u>80.5±0.0</u>" in summary and "77.5±4.0" in summary
    assert "| #Best | 0 | 0 | 2 | 0 |" in text  # usf wins both categories on image AUROC
    assert "seed 2: epoch 6 (early stop)" in text


def test_ablation_plot_is_written(tmp_path: Path) -> None:
    from training.image.report import ablation_plot

    assert ablation_plot(_results(), ["fastflow"], tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").stat().st_size > 5000
    assert not ablation_plot(_results()[_results()["flow"] != "affine"], ["fastflow"], tmp_path / "none.png")
