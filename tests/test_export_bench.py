"""``usfad bench export`` runs end to end and reports what it measured (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cli import main


def test_bench_export_prints_engine_and_flow_variant_tables(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "export", "--data", str(shared_data / "adbench/6_cardio.npz")]
    args += ["--families", "usflow,nonusflow", "--image-families", "", "--epochs", "1"]
    args += ["--seconds", "0.1", "--rounds", "1", "--output", str(out), "--work-dir", str(tmp_path / "work")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| usflow | 1 |" in printed and "| nonusflow | 32 |" in printed
    assert "| usflow | nonusflow | 32 |" in printed
    results = json.loads(out.read_text())
    assert [(row["model"], row["batch"]) for row in results["engines"]] == [
        ("usflow", 1),
        ("usflow", 32),
        ("nonusflow", 1),
        ("nonusflow", 32),
    ]
    for row in results["engines"]:
        assert min(row["eager"], row["torchscript"], row["onnxruntime"]) > 0
        assert row["ort_over_eager"] > 0
    assert [row["batch"] for row in results["variants"]] == [1, 32]
    assert (tmp_path / "work" / "bundles" / "usflow" / "manifest.json").is_file()


def test_bench_export_refuses_unknown_family(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "export", "--data", str(shared_data / "adbench/6_cardio.npz"), "--families", "knn"]
    assert main([*args, "--image-families", ""]) == 2
    assert "knn" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--batches", "1,x"), ("--threads", "0")])
def test_bench_export_names_bad_options(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "export", option, value, "--image-families", ""]) == 2
    assert option in capsys.readouterr().err
