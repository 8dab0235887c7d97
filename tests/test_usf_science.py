"""The paper's claims the product relies on: constant determinant, Eq. 5, norm–NLL ranking,
the determinant prior, and that a USFlow actually learns a density."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import make_moons

from models.flows import NonUSFlow, USFlow, bilateral_log_normal_log_prob
from tests.flow_support import randomise
from training.loop import FitConfig, fit


def test_usflow_log_det_is_constant_and_depends_on_parameters() -> None:
    flow = randomise(USFlow((6,), n_blocks=3, hidden=(16, 16), seed=0)).double()
    x = 3 * torch.randn(64, 6, dtype=torch.float64)
    _, logdet = flow(x)
    assert torch.allclose(logdet, logdet[0].expand_as(logdet), atol=1e-10)
    assert torch.allclose(logdet[0], flow.log_abs_det_constant())
    with torch.no_grad():
        flow.final.log_diag.add_(0.25)
    _, shifted = flow(x)
    assert torch.allclose(shifted, logdet + 0.25 * 6, atol=1e-10)


def test_usflow_image_log_det_is_constant() -> None:
    flow = randomise(USFlow((4, 3, 3), n_blocks=2, hidden=(8,), mask="checkerboard", seed=0)).double()
    _, logdet = flow(torch.randn(8, 4, 3, 3, dtype=torch.float64))
    assert torch.allclose(logdet, logdet[0].expand_as(logdet), atol=1e-10)
    assert torch.allclose(logdet[0], flow.final.log_abs_det() * 9)


def test_nonusflow_log_det_varies_with_input() -> None:
    flow = randomise(NonUSFlow((6,), n_blocks=3, hidden=(16, 16), seed=0)).double()
    _, logdet = flow(3 * torch.randn(64, 6, dtype=torch.float64))
    assert float(logdet.detach().std()) > 1e-3


def test_equation_5_nll_is_deep_svdd_objective() -> None:
    center = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    flow = randomise(USFlow((5,), n_blocks=3, hidden=(16,), center=center, seed=3)).double()
    x = torch.randn(50, 5, dtype=torch.float64)
    z = flow.latent(x)
    expected = (z - center.double()).pow(2).sum(1) - flow.log_abs_det_constant() + 5 / 2 * math.log(math.pi)
    assert torch.allclose(flow.nll(x), expected, atol=1e-10)


def test_latent_norm_ranks_like_nll_for_usflow_only() -> None:
    x = 2 * torch.randn(300, 6, dtype=torch.float64)
    usf = randomise(USFlow((6,), n_blocks=3, hidden=(16,), seed=0), 0.1).double()
    norm, nll = usf.score(x)
    assert torch.equal(torch.argsort(norm), torch.argsort(nll))
    non = randomise(NonUSFlow((6,), n_blocks=3, hidden=(16,), seed=0), 0.1).double()
    norm, nll = non.score(x)
    assert not torch.equal(torch.argsort(norm), torch.argsort(nll)), "the contrast case must differ"


def test_prior_value_matches_formula() -> None:
    log_u = torch.tensor([0.3, -0.2], dtype=torch.float64)
    sigma0 = 0.7
    u = log_u.exp().numpy()
    # LogNormal density of |u| times 1/2 (bilateral), computed independently with numpy.
    density = 0.5 / (u * sigma0 * np.sqrt(2 * np.pi)) * np.exp(-(np.log(u) ** 2) / (2 * sigma0**2))
    assert np.isclose(float(bilateral_log_normal_log_prob(log_u, sigma0)), np.log(density).sum())

    flow = USFlow((4,), n_blocks=2, hidden=(8,), prior_sigma=2.0, seed=0)
    assert math.isclose(flow.prior.sigma0, 2.0 / 4)
    manual = sum(
        bilateral_log_normal_log_prob(layer.log_diag, 0.5)
        for layer in (*(b.affine for b in flow.blocks), flow.final)
    )
    assert torch.allclose(flow.log_prior(), manual)


def test_prior_moves_lu_diagonal_gradients() -> None:
    x = torch.randn(32, 4)
    flows = [USFlow((4,), n_blocks=2, hidden=(8,), prior_sigma=s, seed=0) for s in (None, 0.5)]
    grads = []
    for flow in flows:
        with torch.no_grad():
            flow.final.log_diag.fill_(0.4)
        flow.loss(x, n_train=32).backward()
        grads.append(flow.final.log_diag.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


def test_tight_prior_pins_determinant_near_one() -> None:
    data = torch.randn(256, 4) * 0.05  # a tiny-scale data set pulls |det J| far above 1 under MLE
    logdets = {}
    for sigma in (None, 1e-3):
        flow = USFlow((4,), n_blocks=2, hidden=(16,), prior_sigma=sigma, seed=0)
        fit(flow, data, lambda m, b: m.loss(b, n_train=256), FitConfig(epochs=60, lr=1e-2, patience=100))
        logdets[sigma] = float(flow.log_abs_det_constant())
    assert logdets[None] > 3.0, logdets
    assert abs(logdets[1e-3]) < 0.1, logdets


def test_usflow_learns_two_moons_better_than_gaussian() -> None:
    x_train, _ = make_moons(600, noise=0.06, random_state=0)
    x_test, _ = make_moons(300, noise=0.06, random_state=1)
    train = torch.tensor(x_train, dtype=torch.float32)
    test = torch.tensor(x_test, dtype=torch.float32)
    flow = USFlow((2,), n_blocks=6, hidden=(64, 64), seed=0)
    with torch.no_grad():
        initial_nll = float(flow.nll(test).mean())
    config = FitConfig(epochs=150, batch_size=128, lr=3e-3, patience=150)
    result = fit(flow, train, lambda m, b: m.loss(b), config)
    assert not result.failed
    with torch.no_grad():
        fitted_nll = float(flow.nll(test).mean())
    mean, cov = x_train.mean(0), np.cov(x_train.T)
    diff = x_test - mean
    gauss_nll = float(
        np.mean(0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff))
        + 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
    )
    assert fitted_nll < initial_nll - 0.5
    assert fitted_nll < gauss_nll - 0.2, (fitted_nll, gauss_nll)
