"""Every tabular model learns: AUC-ROC well above chance on real data (6_cardio, quick settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.tabular.factory import TORCH_FAMILIES
from models.tabular.oneflow import bernstein_quantile
from tests.tabular_helpers import TINY, TINY_FLOW, cardio, single_torch_thread  # noqa: F401
from training.tabular.bench import PreparedSplit, prepare_split
from training.tabular.classical import CLASSICAL_MODELS, fit_classical, score_classical
from training.tabular.families import fit_detector, resolve, score_rows


@pytest.fixture(scope="module")
def cardio_split(shared_data: Path) -> PreparedSplit:
    return prepare_split(cardio(shared_data), seed=0, cap=500)


@pytest.mark.parametrize("family", TORCH_FAMILIES)
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
    assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-3)
    # Scores of a row do not depend on the rest of the batch.
    with torch.no_grad():
        alone = detector.score(x[:1])[0]
        batch = detector.score(x[:50])[0][:1]
    assert np.allclose(alone.numpy(), batch.numpy(), rtol=1e-4)
