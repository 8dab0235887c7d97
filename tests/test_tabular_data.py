"""Split, standardisation and file reading of tabular data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tabular_helpers import cardio
from training.cli import main
from training.commands.tabular import train_handler  # noqa: F401  (the CLI module imports cleanly)
from training.tabular.bench import prepare_split
from training.tabular.data import (
    Standardizer,
    TabularDataError,
    holdout_split,
    load_csv,
    load_table,
    one_class_split,
)


def test_one_class_split_is_disjoint_70_30_and_drops_training_anomalies(shared_data: Path) -> None:
    data = cardio(shared_data)
    split = one_class_split(data.y, seed=1)
    assert not set(split.train_index) & set(split.test_index)
    assert (data.y[split.train_index] == 0).all()
    assert len(split.test_index) == round(0.3 * len(data.y))
    assert len(split.train_index) + split.dropped_anomalies + len(split.test_index) == len(data.y)
    assert split.dropped_anomalies > 0
    other = one_class_split(data.y, seed=2)
    assert not np.array_equal(split.test_index, other.test_index)
    assert np.array_equal(split.test_index, one_class_split(data.y, seed=1).test_index)


def test_standardisation_uses_training_rows_only(shared_data: Path) -> None:
    data = cardio(shared_data)
    split = one_class_split(data.y, seed=0)
    prepared = prepare_split(data, seed=0, cap=None)
    # Corrupting every test row must not change the training statistics.
    corrupted = data.x.copy()
    corrupted[split.test_index] = 1e6
    data.x = corrupted
    again = prepare_split(data, seed=0, cap=None)
    assert np.array_equal(prepared.x_train, again.x_train)
    assert np.allclose(prepared.x_train.mean(axis=0), 0, atol=1e-4)
    assert again.x_test.max() > 1e3  # the test rows really were standardised with training statistics


def test_row_cap_subsamples_training_rows_only(shared_data: Path) -> None:
    data = cardio(shared_data)
    full = prepare_split(data, seed=0, cap=None)
    capped = prepare_split(data, seed=0, cap=200)
    assert len(capped.x_train) == 200 and capped.n_train_available == len(full.x_train)
    assert len(capped.x_test) == len(full.x_test)


def test_constant_column_gets_unit_std() -> None:
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0)])
    standardizer = Standardizer.fit(x)
    assert standardizer.std[1] == 1.0
    out = standardizer.transform(np.array([[4.5, 5.0]]))
    assert np.isfinite(out).all() and out[0, 1] == pytest.approx(2.0)


def test_holdout_split_holds_out_ten_percent() -> None:
    fit_rows, held = holdout_split(100, seed=0)
    assert len(held) == 10 and len(fit_rows) == 90 and not set(fit_rows) & set(held)


def test_csv_with_label_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b,label\n1,2,0\n3,4.5,1\n5,6,0\n")
    table = load_csv(path, label_column="label")
    assert table.feature_names == ["a", "b"]
    assert table.x.tolist() == [[1, 2], [3, 4.5], [5, 6]]
    assert table.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("a,b\n1,2\n3,x\n", None, "column 'b' row 2 is not a number: 'x'"),
        ("a,b\n1,2\n3\n", None, "row 2 has 1 cells"),
        ("a,b\n1,nan\n", None, "column 'b' row 1 is not a finite number"),
        ("a,b\n1,2\n", "label", "label column 'label' is not in the header"),
        ("a,label\n1,2\n", "label", "must hold only 0 and 1"),
        ("", None, "header row is required"),
    ],
)
def test_bad_csv_gives_an_error_naming_the_field(
    tmp_path: Path, text: str, label: str | None, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TabularDataError, match=message.replace("(", r"\(")):
        load_table(path, label)


def test_train_cli_reports_bad_csv_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("speed,temp\n1,2\n3,hot\n")
    code = main(["train", "tabular", "--data", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "column 'temp' row 2 is not a number: 'hot'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unsupported_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(TabularDataError, match="unsupported file type"):
        load_table(tmp_path / "x.parquet")
    with pytest.raises(TabularDataError, match="not found"):
        load_table(tmp_path / "missing.npz")
