"""The optional per-step learning-rate schedule of ``training.loop.fit`` and U-Flow's use of it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.image_support import TINY_SIZE, magnetic_tile

pytestmark = pytest.mark.image


def _fit(schedule, epochs: int = 3):  # noqa: ANN001, ANN202
    from training.loop import FitConfig, fit

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(64, 4)
    config = FitConfig(epochs=epochs, batch_size=8, lr=0.01, patience=100, lr_schedule=schedule)
    result = fit(model, x, lambda m, b: m(b).pow(2).mean(), config)
    return model, result


def test_linear_schedule_decays_the_rate_every_step() -> None:
    from training.loop import LinearLRSchedule

    _, result = _fit(LinearLRSchedule(start_factor=1.0, end_factor=0.4, total_steps=16))
    assert result.steps == 24  # 8 batches per epoch
    # After 8 of 16 steps the factor is 1 - 0.6 * 8/16 = 0.7; from step 16 on it stays at 0.4.
    assert result.lr_history == pytest.approx([0.007, 0.004, 0.004])


def test_fit_without_a_schedule_keeps_its_rate_and_weights() -> None:
    from training.loop import LinearLRSchedule

    plain, result = _fit(None)
    assert result.lr_history == pytest.approx([0.01] * 3)
    constant, _ = _fit(LinearLRSchedule(start_factor=1.0, end_factor=1.0, total_steps=16))
    decayed, _ = _fit(LinearLRSchedule(start_factor=1.0, end_factor=0.4, total_steps=16))
    for a, b, c in zip(plain.parameters(), constant.parameters(), decayed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # a constant schedule is no schedule
        assert not torch.equal(a, c)  # the decay does change the fit


def test_uflow_runs_with_anomalibs_decay_and_records_it(tmp_path) -> None:  # noqa: ANN001
    from training.image.train import resolve_settings, train_image_run

    for profile in ("cpu", "paper"):
        schedule = resolve_settings("uflow", profile, {}).lr_schedule
        assert (schedule.start_factor, schedule.end_factor, schedule.total_steps) == (1.0, 0.4, 25_000)
        assert resolve_settings("fastflow", profile, {}).lr_schedule is None
        assert resolve_settings("cflow", profile, {}).lr_schedule is None

    run_dir = train_image_run(
        magnetic_tile(),
        "uflow",
        "usf",
        tmp_path / "uflow",
        epochs=2,
        batch_size=4,
        input_size=TINY_SIZE,
        max_train_images=10,
        max_test_images=4,
        model_args={"flow_steps": 2},
    )
    run = json.loads((run_dir / "run.json").read_text())
    assert run["settings"]["lr_schedule"] == {"start_factor": 1.0, "end_factor": 0.4, "total_steps": 25_000}
    steps = run["fit"]["steps"]
    assert steps == 2 * 2  # 2 epochs of 8 training images (2 held out for validation) in batches of 4
    assert run["fit"]["lr_history"][-1] == pytest.approx(1e-3 * (1 - 0.6 * steps / 25_000))
    assert run["fit"]["lr_history"][-1] < run["fit"]["lr_history"][0] < 1e-3
