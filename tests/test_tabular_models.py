"""Every tabular model learns: AUC-ROC well above chance on real data (6_cardio, quick settings)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.factory import build_detector
from models.families import TABULAR_FAMILIES
from models.tabular.oneflow import bernstein_quantile
from tests.tabular_helpers import TINY, TINY_FLOW, cardio
from training.tabular.bench import PreparedSplit, prepare_split
from training.tabular.classical import CLASSICAL_MODELS, fit_classical, score_classical
from training.tabular.families import fit_detector, resolve, score_rows


@pytest.fixture(scope="module")
def cardio_split(shared_data: Path) -> PreparedSplit:
    return prepare_split(cardio(shared_data), seed=0, cap=500)


@pytest.mark.parametrize("family", TABULAR_FAMILIES)
def test_torch_model_learns_on_cardio(family: str, cardio_split: PreparedSplit) -> None:
    overrides = TINY_FLOW if "flow" in family else TINY
    config, settings = resolve(family, cardio_split.x_train.shape[1], 0, overrides)
    outcome = fit_detector(family, torch.from_numpy(cardio_split.x_train), config, settings, seed=0)
    assert not outcome.result.failed
    assert outcome.result.epochs_run >= 1
    scores, nll = score_rows(outcome.detector, torch.from_numpy(cardio_split.x_test))
    auc = roc_auc_score(cardio_split.y_test, scores.numpy())
    assert auc > 0.8, f"{family}: AUC {auc:.3f}"
    if family in ("usflow", "nonusflow"):
        assert torch.isfinite(nll).all()
    else:
        assert torch.isnan(nll).all()


@pytest.mark.parametrize("model", CLASSICAL_MODELS)
def test_classical_reference_learns_on_cardio(model: str, cardio_split: PreparedSplit) -> None:
    fitted = fit_classical(model, cardio_split.x_train, seed=0)
    auc = roc_auc_score(cardio_split.y_test, score_classical(fitted, cardio_split.x_test))
    assert auc > 0.8


def test_bernstein_quantile_matches_order_statistics() -> None:
    values = torch.arange(1001, dtype=torch.float64)
    assert float(bernstein_quantile(values, 0.95)) == pytest.approx(950.0, abs=1e-6)
    assert float(bernstein_quantile(values[torch.randperm(1001)], 0.5)) == pytest.approx(500.0, abs=1e-6)


def test_deep_svdd_center_is_fixed_and_pushed_away_from_zero(cardio_split: PreparedSplit) -> None:
    config, settings = resolve("deep_svdd", cardio_split.x_train.shape[1], 0, TINY)
    outcome = fit_detector("deep_svdd", torch.from_numpy(cardio_split.x_train), config, settings, seed=0)
    center = outcome.detector.center
    assert (center.abs() >= 0.1 - 1e-7).all()
    assert all(not isinstance(p, torch.Tensor) or p is not center for p in outcome.detector.parameters())


def test_dohsc_projection_whitens_training_codes(cardio_split: PreparedSplit) -> None:
    config, settings = resolve("dohsc", cardio_split.x_train.shape[1], 0, TINY)
    x = torch.from_numpy(cardio_split.x_train)
    detector = fit_detector("dohsc", x, config, settings, seed=0).detector
    with torch.no_grad():
        codes = detector.encoder(x)
    gram = codes.T @ codes / x.shape[0]
    # float32 round-off grows with the conditioning of the raw codes (about 3e4 here).
    assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=5e-3)
    # In float64 the stored projection whitens the training codes exactly.
    with torch.no_grad():
        encoder64 = copy.deepcopy(detector.encoder).double()
        encoder64.freeze_projection(x.double())
        codes64 = encoder64(x.double())
    gram64 = codes64.T @ codes64 / x.shape[0]
    assert torch.allclose(gram64, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-8)
    # Scores of a row do not depend on the rest of the batch (exactly so in float64; float32
    # round-off of batched products is amplified by the projection's conditioning).
    detector64 = copy.deepcopy(detector).double()
    with torch.no_grad():
        alone = detector.score(x[:1])[0]
        batch = detector.score(x[:50])[0][:1]
        alone64 = detector64.score(x[:1].double())[0]
        batch64 = detector64.score(x[:50].double())[0][:1]
    assert np.allclose(alone.numpy(), batch.numpy(), rtol=1e-3)
    assert np.allclose(alone64.numpy(), batch64.numpy(), rtol=1e-9)


def test_dohsc_encoder_follows_the_original_architecture() -> None:
    config, _ = resolve("dohsc", 21, 0, {})
    encoder = build_detector("dohsc", config).encoder.encoder
    linears = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(21, 500), (500, 30), (30, 30)]
    assert all(m.bias is None for m in linears)
    # One LeakyReLU, after the first layer: the last two layers compose linearly.
    assert [type(m).__name__ for m in encoder.net] == ["Linear", "LeakyReLU", "Linear", "Linear"]
    assert 0.015 < float(linears[0].weight.detach().std()) < 0.025  # N(0, 0.02²) initialisation


def test_dohsc_loss_pulls_every_row_towards_the_center(cardio_split: PreparedSplit) -> None:
    """The original trains with R = 0: every row gets a gradient, not only the ν outermost."""
    config, settings = resolve("dohsc", cardio_split.x_train.shape[1], 0, TINY)
    x = torch.from_numpy(cardio_split.x_train)
    detector = fit_detector("dohsc", x, config, settings, seed=0).detector
    assert (detector.center.abs() >= 0.1 - 1e-7).all()
    detector.train()
    batch = x[:64].clone().requires_grad_(True)
    detector.loss(batch).backward()
    assert batch.grad is not None
    assert (batch.grad.norm(dim=1) > 0).all()


def test_do2hsc_shell_radii_loss_and_score(cardio_split: PreparedSplit) -> None:
    config, settings = resolve("do2hsc", cardio_split.x_train.shape[1], 0, TINY)
    x = torch.from_numpy(cardio_split.x_train)
    detector = fit_detector("do2hsc", x, config, settings, seed=0).detector
    r_min, r_max = float(detector.r_min), float(detector.r_max)
    assert 0.0 < r_min < r_max
    with torch.no_grad():
        dist = detector.distance(x)
        score = detector.score(x)[0]
        # The radii were fixed before the shell stage, which then pulled rows into the shell.
        inside = (dist >= detector.r_min) & (dist <= detector.r_max)
        assert float(inside.float().mean()) > 1.0 - 2.0 * detector.nu
        # Score: at most the half-width inside the shell, above it outside, and ranked as the
        # original's (d − r_max)(d − r_min).
        half_width = detector.half_width()
        assert bool((score[inside] <= half_width + 1e-6).all())
        assert bool((score[~inside] > half_width - 1e-6).all())
        product = (dist - detector.r_max) * (dist - detector.r_min)
        assert torch.equal(torch.argsort(score), torch.argsort(product))
        # Shell loss: zero for rows inside, d² − r_max² beyond the outer sphere.
        inner = x[inside][:8]
        assert float(detector.loss(inner)) == pytest.approx(0.0, abs=1e-6)
        outer = x[dist > detector.r_max][:1]
        expected = detector.squared_distance(outer) - detector.r_max.pow(2)
        assert float(detector.loss(outer)) == pytest.approx(float(expected[0]), rel=1e-4)


def test_dohsc_pretraining_uses_the_original_learning_rate() -> None:
    _, settings = resolve("dohsc", 21, 0, {})
    assert settings.pretrain_lr == pytest.approx(1e-3)
    assert settings.lr == pytest.approx(1e-4)
    assert resolve("deep_svdd", 21, 0, {})[1].pretrain_lr is None
