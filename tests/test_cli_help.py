"""``usfad --help``: an example line for every command; progress bars and the closing summary line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import progress
from training.cli import build_parser, commands, main
from training.loop import FitConfig, fit


def test_every_command_shows_a_runnable_example() -> None:
    parsers = commands(build_parser())
    expected = {"", "train tabular", "train image", "bench tabular", "bench image", "export", "score"}
    assert expected <= set(parsers)
    for path, parser in parsers.items():
        text = parser.format_help()
        assert "\nexample:\n  usfad " in text, f"usfad {path} --help has no example"
        example = text.split("\nexample:\n  ", 1)[1].splitlines()[0]
        if path and " " in path:  # a leaf like "bench tabular": its example runs that very command
            assert example.startswith(f"usfad {path} "), (path, example)


def _csv(path: Path) -> Path:
    rows = np.random.default_rng(0).normal(size=(120, 3))
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.5f}" for v in row) for row in rows) + "\n")
    return path


def test_train_shows_epoch_progress_and_ends_with_where_the_run_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USFAD_PROGRESS", "1")  # stderr is not a terminal under pytest
    out = tmp_path / "run"
    args = ["train", "tabular", "--data", str(_csv(tmp_path / "rows.csv")), "--out", str(out)]
    assert main([*args, "--set", "epochs=3", "--set", "hidden=[8,8]", "--set", "n_blocks=1"]) == 0
    captured = capsys.readouterr()
    assert "fit" in captured.err and "epoch" in captured.err and "3/3" in captured.err
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith(f"saved {out}:") and (out / "run.json").is_file()


def test_library_calls_draw_no_bars(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USFAD_PROGRESS", "1")
    model = torch.nn.Linear(2, 1)
    fit(model, torch.randn(32, 2), lambda m, b: m(b).pow(2).mean(), FitConfig(epochs=2, batch_size=16))
    assert capsys.readouterr().err == ""
    with progress.enabled():
        bar = progress.bar(2, "steps")
        bar.update(2)
        bar.close()
    assert "steps" in capsys.readouterr().err


def test_export_ends_with_where_the_bundle_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "tabular", "--data", str(_csv(tmp_path / "rows.csv")), "--out", str(run)]
    assert main([*args, "--set", "epochs=1", "--set", "hidden=[8,8]", "--set", "n_blocks=1"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "bundle"), "--format", "onnx"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'bundle'}:")
