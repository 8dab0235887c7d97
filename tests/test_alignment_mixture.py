"""The asymmetric Gaussian mixture of Appendix C: parameters, exact density, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from training.experiments.alignment.mixture import AsymmetricGaussianMixture, component_variances


@pytest.fixture(scope="module")
def grid_2d() -> tuple[np.ndarray, np.ndarray]:
    """``(axis, ln p)`` on an 801 × 801 grid over [-16, 16]² (the wide component has σ = √5)."""
    axis = np.linspace(-16.0, 16.0, 801)
    g0, g1 = np.meshgrid(axis, axis, indexing="ij")
    grid = torch.from_numpy(np.stack([g0.ravel(), g1.ravel()], axis=1))
    return axis, AsymmetricGaussianMixture(2).log_prob(grid).numpy().reshape(axis.size, axis.size)


def test_density_integrates_to_one_in_2d(grid_2d: tuple[np.ndarray, np.ndarray]) -> None:
    axis, log_p = grid_2d
    total = integrate.trapezoid(integrate.trapezoid(np.exp(log_p), axis, axis=1), axis)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_density_matches_monte_carlo_in_2d(grid_2d: tuple[np.ndarray, np.ndarray]) -> None:
    """Box probabilities from the integrated density agree with sample frequencies, and the
    grid entropy ``-∫ p ln p`` agrees with the sample mean of ``-ln p``."""
    mixture = AsymmetricGaussianMixture(2)
    n = 200_000
    samples = mixture.sample(n, seed=7).numpy()
    axis, log_p = grid_2d
    density = np.exp(log_p)
    for (x0, x1), (y0, y1) in [
        ((0.0, 2.0), (0.0, 2.0)),
        ((-4.0, -1.0), (-2.0, 0.0)),
        ((-1.0, 1.0), (-6.0, 6.0)),
    ]:
        inside_x, inside_y = (axis >= x0) & (axis <= x1), (axis >= y0) & (axis <= y1)
        box = density[np.ix_(inside_x, inside_y)]
        mass = integrate.trapezoid(integrate.trapezoid(box, axis[inside_y], axis=1), axis[inside_x])
        frequency = np.mean(
            (samples[:, 0] >= x0) & (samples[:, 0] <= x1) & (samples[:, 1] >= y0) & (samples[:, 1] <= y1)
        )
        standard_error = np.sqrt(mass * (1 - mass) / n)
        assert abs(frequency - mass) < 5 * standard_error + 2e-3, (x0, x1, y0, y1)
    entropy_grid = -integrate.trapezoid(integrate.trapezoid(density * log_p, axis, axis=1), axis)
    sample_nll = -mixture.log_prob(torch.from_numpy(samples)).numpy()
    assert sample_nll.mean() == pytest.approx(entropy_grid, abs=5 * sample_nll.std() / np.sqrt(n))


def test_parameters_follow_appendix_c() -> None:
    """``μ = ±𝟙``, ``Σ₁ = I``, ``Σ₂ = diag(5, …, 5, ½, …, ½)``, equal weights (checked via scipy)."""
    dim = 8
    theta = component_variances(dim).numpy()
    np.testing.assert_array_equal(theta, [5.0] * 4 + [0.5] * 4)
    assert np.prod(theta) == pytest.approx(2.5 ** (dim / 2))
    x = np.random.default_rng(0).normal(size=(50, dim)) * 2
    expected = np.logaddexp(
        np.log(0.5) + stats.multivariate_normal(np.ones(dim), np.eye(dim)).logpdf(x),
        np.log(0.5) + stats.multivariate_normal(-np.ones(dim), np.diag(theta)).logpdf(x),
    )
    actual = AsymmetricGaussianMixture(dim).log_prob(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-10)


def test_sample_moments() -> None:
    """Per coordinate: mean 0 and variance ``1 + (1 + θ_i) / 2`` (law of total variance)."""
    samples = AsymmetricGaussianMixture(4).sample(100_000, seed=1).numpy()
    np.testing.assert_allclose(samples.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(samples.var(axis=0), [4.0, 4.0, 1.75, 1.75], rtol=0.03)


def test_sampling_is_seeded_and_leaves_global_rng_alone() -> None:
    mixture = AsymmetricGaussianMixture(4)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = mixture.sample(10, seed=5), mixture.sample(10, seed=5), mixture.sample(10, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.rand(1), expected_next)


@pytest.mark.parametrize("dim", [0, 1, 3, 7])
def test_rejects_odd_or_tiny_dimensions(dim: int) -> None:
    with pytest.raises(ValueError, match="dim must be an even integer"):
        AsymmetricGaussianMixture(dim)
