"""Random search of the alignment experiment: schedules, reproducible trials, failure accounting."""

from __future__ import annotations

import math

import pytest
import torch

from models.flows import NonUSFlow, USFlow
from models.tabular.deep_svdd import DeepSVDD
from training.experiments.alignment.mixture import AsymmetricGaussianMixture
from training.experiments.alignment.search import (
    SearchResult,
    Trial,
    build_model,
    sample_trials,
    svdd_widths,
    train_trial,
)
from training.experiments.alignment.space import AlignmentConfig


def test_svdd_width_schedule_of_appendix_c() -> None:
    assert svdd_widths(4, 2) == [4, 4]
    assert svdd_widths(4, 3) == [4, 8, 4]
    assert svdd_widths(3, 6) == [3, 48, 24, 12, 6, 3]
    with pytest.raises(ValueError, match="depth"):
        svdd_widths(4, 1)


def test_trials_are_reproducible_and_inside_the_space() -> None:
    config = AlignmentConfig(configs_per_model=25, seed=3)
    space = config.space
    flows = sample_trials("NonUSFlow", 32, config)
    assert flows == sample_trials("NonUSFlow", 32, config)
    assert flows != sample_trials("NonUSFlow", 32, AlignmentConfig(configs_per_model=25, seed=4))
    assert len(flows) == 25
    for trial in flows:
        assert space.flow_blocks[0] <= trial.params["n_blocks"] <= space.flow_blocks[1]
        assert trial.params["conditioner_layers"] in (2, 3)
        assert trial.params["hidden_width"] in (32, 64)
        assert trial.params["lr"] in space.learning_rates and trial.params["batch_size"] in space.batch_sizes
    depths = {t.params["depth"] for t in sample_trials("DeepSVDD", 8, config)}
    assert depths <= set(range(2, 7)) and len(depths) > 1


def test_built_models_match_their_trial() -> None:
    config = AlignmentConfig()
    params = {"lr": 1e-3, "batch_size": 64, "n_blocks": 3, "conditioner_layers": 2, "hidden_width": 16}
    usf = build_model(Trial("USFlow", 4, 0, 1, params), config.space)
    non = build_model(Trial("NonUSFlow", 4, 0, 1, params), config.space)
    assert isinstance(usf, USFlow) and isinstance(non, NonUSFlow)
    assert len(usf.blocks) == 3 and usf.base.variance == 0.5
    svdd = build_model(Trial("DeepSVDD", 4, 0, 1, {"lr": 1e-3, "batch_size": 64, "depth": 4}), config.space)
    assert isinstance(svdd, DeepSVDD)
    assert [m.weight.shape for m in svdd.encoder.net if isinstance(m, torch.nn.Linear)] == [
        (16, 4),
        (8, 16),
        (4, 8),
    ]
    assert all(m.bias is None for m in svdd.encoder.net if isinstance(m, torch.nn.Linear))


def test_diverged_trial_is_counted_as_failed_and_never_selected() -> None:
    config = AlignmentConfig(epochs=2, patience=1, seconds_per_run=None)
    data = AsymmetricGaussianMixture(2).sample(256, seed=0).float()
    params = {"lr": 1e-3, "batch_size": 64, "n_blocks": 2, "conditioner_layers": 2, "hidden_width": 8}
    poisoned = data.clone()
    poisoned[5, 0] = float("inf")
    bad = train_trial(Trial("USFlow", 2, 0, 0, params), poisoned, data[:64], config)
    good = train_trial(Trial("USFlow", 2, 1, 0, params), data, data[:64], config)
    assert bad.failed and bad.model is None and "non-finite" in bad.stop_reason
    assert not good.failed and math.isfinite(good.val_loss) and good.epochs_run >= 1
    search = SearchResult([bad, good])
    assert search.failed_runs == 1
    assert search.best is good
