"""``usfad bench tabular``: output files, resuming, failed runs recorded as failed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import CARDIO_FILE, GLASS_FILE
from tests.tabular_helpers import TINY_FLOW, write_subset
from training.cli import main
from training.tabular.bench import BenchSettings, read_results, run_benchmark
from training.tabular.report import write_report


@pytest.fixture(scope="module")
def data_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adbench_subset")
    write_subset(shared_data / CARDIO_FILE, folder / "6_cardio.npz", rows=400)
    write_subset(shared_data / GLASS_FILE, folder / "14_glass.npz", rows=214)
    return folder


def _bench(data_dir: Path, out: Path) -> int:
    argv = ["bench", "tabular", "--data-dir", str(data_dir), "--models", "knn,iforest", "--seeds", "2"]
    return main([*argv, "--out", str(out)])


def test_bench_cli_writes_rows_summary_and_figures_then_resumes(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    assert _bench(data_dir, out) == 0
    printed = capsys.readouterr()
    rows = read_results(out)
    assert len(rows) == 2 * 2 * 2  # data sets × models × seeds
    assert {(r["dataset"], r["model"], r["seed"]) for r in rows} == {
        (d, m, s) for d in ("6_cardio", "14_glass") for m in ("knn", "iforest") for s in ("0", "1")
    }
    assert all(r["failed"] == "False" and 0.5 < float(r["auc_roc"]) <= 1 for r in rows)
    assert "| knn |" in printed.out and "paper protocol" in printed.out
    assert "8 to run" in printed.err
    for name in ("summary.md", "summary.csv", "per_dataset_auc.csv", "boxplot_auc.png", "pairwise_wins.png"):
        assert (out / name).stat().st_size > 0

    # A finished run resumes without redoing anything ...
    assert _bench(data_dir, out) == 0
    assert "8 rows already done, 0 to run" in capsys.readouterr().err
    assert read_results(out) == rows
    # ... and an interrupted one redoes exactly the missing rows.
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:5])
    assert _bench(data_dir, out) == 0
    assert "5 rows already done, 3 to run" in capsys.readouterr().err
    again = read_results(out)
    assert len(again) == 8
    assert {(r["dataset"], r["model"], r["seed"]) for r in again} == {
        (r["dataset"], r["model"], r["seed"]) for r in rows
    }
    same = {(r["dataset"], r["model"], r["seed"]): r["auc_roc"] for r in rows}
    assert all(same[(r["dataset"], r["model"], r["seed"])] == r["auc_roc"] for r in again)


def test_bench_refuses_to_resume_with_other_settings(data_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "bench"
    assert _bench(data_dir, out) == 0
    argv = ["bench", "tabular", "--data-dir", str(data_dir), "--models", "knn", "--profile", "cpu"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "profile='paper'" in capsys.readouterr().err


def test_cpu_profile_is_marked_as_not_the_paper_protocol(data_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "bench"
    argv = ["bench", "tabular", "--data-dir", str(data_dir), "--models", "knn", "--seeds", "1"]
    assert main([*argv, "--profile", "cpu", "--max-train-rows", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "NOT the paper protocol" in printed.out and "capped at 100" in printed.out
    assert all(r["n_train"] == "100" for r in read_results(out) if int(r["n_train_available"]) > 100)


def test_failed_and_successful_runs_are_both_recorded(data_dir: Path, tmp_path: Path) -> None:
    settings = BenchSettings(
        data_dir=str(data_dir),
        datasets=["6_cardio.npz"],
        models=["usflow", "knn"],
        seeds=[0],
        profile="test",
        description="test: diverging learning rate",
        overrides={**TINY_FLOW, "lr": 1e12},
    )
    run_benchmark(settings, tmp_path / "bench", log=lambda line: None)
    rows = {r["model"]: r for r in read_results(tmp_path / "bench")}
    assert rows["usflow"]["failed"] == "True" and "non-finite" in rows["usflow"]["error"]
    assert rows["usflow"]["auc_roc"] == ""
    assert rows["knn"]["failed"] == "False" and float(rows["knn"]["auc_roc"]) > 0.5
    table = [line for line in write_report(tmp_path / "bench").splitlines() if line.startswith("| ")]
    lines = {line.split("|")[1].strip(): line for line in table[2:]}
    assert lines["usflow"].endswith("| 1 / 1 |") and lines["knn"].endswith("| 0 / 1 |")


def test_bench_rejects_unknown_model_and_missing_folder(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert (
        main(["bench", "tabular", "--data-dir", str(tmp_path), "--models", "svm", "--out", str(tmp_path)])
        == 2
    )
    assert "unknown ['svm']" in capsys.readouterr().err
    assert (
        main(["bench", "tabular", "--data-dir", str(tmp_path / "no"), "--models", "knn", "--out", "x"]) == 2
    )
    assert "is not a folder" in capsys.readouterr().err


def test_two_shards_split_the_rows_and_the_report_reads_both(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    for shard in ("0/2", "1/2"):
        argv = ["bench", "tabular", "--data-dir", str(data_dir), "--models", "knn,iforest", "--seeds", "2"]
        assert main([*argv, "--shard", shard, "--out", str(out)]) == 0
    first = (out / "results-shard0of2.csv").read_text().splitlines()[1:]
    second = (out / "results-shard1of2.csv").read_text().splitlines()[1:]
    assert len(first) == len(second) == 4
    keys = [(r["dataset"], r["model"], r["seed"]) for r in read_results(out)]
    assert len(keys) == len(set(keys)) == 8
    assert {line.split(",")[1] for line in first} == {"knn", "iforest"}  # shards rotate the models
    assert "| 0 / 4 |" in (out / "summary.md").read_text()  # the report reads both shard files
