"""``usfad experiment alignment`` end to end on a tiny budget, and its input errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from training.cli import main
from training.experiments.alignment.experiment import expected_outputs
from training.experiments.alignment.space import AlignmentConfig


def test_tiny_run_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alignment"
    argv = ["experiment", "alignment", "--dims", "2,4", "--out", str(out), "--configs", "2"]
    assert main([*argv, "--samples", "200", "--epochs", "2", "--seed", "1"]) == 0
    config = AlignmentConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config.dims == (2, 4) and config.configs_per_model == 2 and config.seed == 1
    for name in expected_outputs(config):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "fig2_latent_2d.png" in expected_outputs(config)

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["dim"], r["model"]) for r in rows] == [
        (d, m) for d in ("2", "4") for m in ("DeepSVDD", "NonUSFlow", "USFlow")
    ]
    for row in rows:
        assert -1.0 <= float(row["spearman_norm"]) <= 1.0
        assert int(row["runs"]) == 2 and 0 <= int(row["failed_runs"]) <= 2
        if row["model"] == "DeepSVDD":
            assert row["spearman_loglik"] == "nan"  # Deep SVDD has no likelihood
        if row["model"] == "USFlow":
            # A USF ranks by latent norm exactly as by its own likelihood (constant det J).
            assert float(row["spearman_norm"]) == pytest.approx(float(row["spearman_loglik"]), abs=1e-12)
    with (out / "trials.csv").open() as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 12
    assert sum(int(t["selected"]) for t in trials) == 6 - sum(int(r["failed_runs"]) == 2 for r in rows)
    table = (out / "results.md").read_text()
    assert table.count("\n| ") == 6 and "Spearman ρ" in table
    assert "d=4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dims", "2,3", "even integer"),
        ("--dims", "two", "comma-separated integers"),
        ("--configs", "0", "positive integer"),
        ("--models", "USFlow,GAN", "models must be among"),
        ("--seconds-per-run", "-1", "positive number"),
    ],
)
def test_bad_arguments_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "alignment", "--out", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert flag in error and message in error
    assert not any(tmp_path.iterdir())


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["experiment", "alignment", "--out", str(target), "--dims", "2"]) == 2
    assert "--out" in capsys.readouterr().err
    assert target.read_text() == "not a folder"
