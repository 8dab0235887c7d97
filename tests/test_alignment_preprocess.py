"""Standardisation and scoring: log-densities of standardised inputs map back to raw inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from training.experiments.alignment.evaluate import score_model
from training.experiments.alignment.preprocess import Standardization
from training.experiments.alignment.search import Trial, build_model
from training.experiments.alignment.space import SearchSpace


def test_standardization_uses_training_statistics() -> None:
    train = torch.randn(5000, 3, dtype=torch.float64) * torch.tensor([0.5, 2.0, 7.0]) + 3.0
    standardize = Standardization.fit(train)
    standardized = standardize(train)
    assert standardized.dtype == torch.float32
    torch.testing.assert_close(standardized.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardized.std(0), torch.ones(3), atol=1e-5, rtol=0)
    constant = Standardization.fit(torch.ones(10, 2))
    assert torch.equal(constant.std, torch.ones(2))


def test_change_of_variables_constant() -> None:
    """``ln N(x; m, diag σ²) = ln N(s(x); 0, I) + ln|det J_s|``."""
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    standardize = Standardization(mean, std)
    assert standardize.log_abs_det == pytest.approx(-math.log(0.5) - math.log(3.0))
    x = np.random.default_rng(0).normal(size=(20, 2)) * 2
    raw = stats.multivariate_normal(mean.numpy(), np.diag(std.numpy() ** 2)).logpdf(x)
    standardized = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(standardize(torch.from_numpy(x)))
    np.testing.assert_allclose(raw, standardized + standardize.log_abs_det, rtol=1e-5)


@pytest.mark.parametrize("model", ["USFlow", "NonUSFlow"])
def test_flows_start_at_the_base_scale(model: str) -> None:
    """At initialisation ``φ = √½ · Q`` with ``Q`` orthogonal: ``‖φ(x)‖ = √½ ‖x‖``."""
    params = {"lr": 1e-3, "batch_size": 64, "n_blocks": 3, "conditioner_layers": 2, "hidden_width": 16}
    flow = build_model(Trial(model, 6, 0, 11, params), SearchSpace()).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    z, log_det = flow(x)
    torch.testing.assert_close(z.norm(dim=1), math.sqrt(0.5) * x.norm(dim=1))
    torch.testing.assert_close(log_det, torch.full((32,), 3 * math.log(0.5), dtype=torch.float64))


def test_score_model_adds_the_input_log_det() -> None:
    params = {"lr": 1e-3, "batch_size": 64, "n_blocks": 2, "conditioner_layers": 2, "hidden_width": 8}
    flow = build_model(Trial("USFlow", 4, 0, 3, params), SearchSpace())
    x = torch.randn(50, 4)
    plain, shifted = score_model(flow, x), score_model(flow, x, input_log_abs_det=1.25)
    np.testing.assert_allclose(shifted.estimated_log_prob, plain.estimated_log_prob + 1.25, rtol=1e-6)
    np.testing.assert_allclose(shifted.latent_norm, plain.latent_norm)
    np.testing.assert_allclose(plain.estimated_log_prob, flow.log_prob(x).detach().numpy(), rtol=1e-5)
