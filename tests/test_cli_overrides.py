"""Both ``train`` commands take ``--set KEY=VALUE`` (one override style); image's typed flags stay."""

from __future__ import annotations

import pytest

from training.cli import build_parser
from training.commands.image import _overrides
from training.image.train import resolve_settings


def _image_args(*extra: str):
    return build_parser().parse_args(
        ["train", "image", "--data", "d", "--model", "fastflow", "--flow", "usf", "--out", "o", *extra]
    )


def test_train_image_takes_set_like_train_tabular() -> None:
    args = _image_args("--epochs", "3", "--set", "lr=0.0003", "--set", 'model_args={"flow_steps": 2}')
    settings = resolve_settings("fastflow", "cpu", _overrides(args))
    assert settings.epochs == 3 and settings.lr == pytest.approx(3e-4)
    assert settings.model_args["flow_steps"] == 2 and settings.model_args["hidden_ratio"] == 1.0
    typed = ["train", "tabular", "--data", "d", "--out", "o", "--set", "epochs=2"]
    tabular = build_parser().parse_args(typed)
    assert tabular.overrides == [("epochs", 2)]


def test_set_wins_over_the_typed_flag_and_unknown_keys_are_named() -> None:
    args = _image_args("--epochs", "3", "--set", "epochs=7")
    assert resolve_settings("fastflow", "cpu", _overrides(args)).epochs == 7
    with pytest.raises(ValueError, match="unknown training setting"):
        resolve_settings("fastflow", "cpu", _overrides(_image_args("--set", "depth=3")))
