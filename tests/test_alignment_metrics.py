"""Rank statistics of the alignment experiment on inputs with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.experiments.alignment.metrics import latent_alignment, likelihood_agreement, rank_agreement


def test_perfect_and_reversed_orderings() -> None:
    x = np.array([0.1, 0.5, 2.0, 7.0, 9.5])
    assert rank_agreement(x, x**3) == pytest.approx(rank_agreement(x, x))
    assert rank_agreement(x, np.exp(x)).spearman == pytest.approx(1.0)
    assert rank_agreement(x, -x).kendall == pytest.approx(-1.0)


def test_one_swap_without_ties() -> None:
    # ρ = 1 - 6 Σ d² / (n (n² - 1)) = 1 - 12/60; τ = (5 - 1) / 6.
    result = rank_agreement(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert result.spearman == pytest.approx(0.8)
    assert result.kendall == pytest.approx(2 / 3)


def test_ties_use_average_ranks_and_tau_b() -> None:
    # y ranks (1, 2.5, 2.5, 4): ρ = 4.5 / sqrt(5 · 4.5) = 3/√10.
    # P = 5 concordant, Q = 0, one pair tied in y only: τ_b = 5 / sqrt(5 · 6).
    result = rank_agreement(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 2.0, 3.0]))
    assert result.spearman == pytest.approx(3 / math.sqrt(10))
    assert result.kendall == pytest.approx(5 / math.sqrt(30))


def test_sign_conventions() -> None:
    """A latent norm that grows as density falls is faithful (+1); so is ln p̂ tracking ln p."""
    log_p = np.array([-1.0, -2.0, -3.5, -10.0])
    assert latent_alignment(log_p, np.array([0.1, 0.2, 0.9, 3.0])).spearman == pytest.approx(1.0)
    assert latent_alignment(log_p, np.array([3.0, 0.9, 0.2, 0.1])).kendall == pytest.approx(-1.0)
    assert likelihood_agreement(log_p, log_p - 5).spearman == pytest.approx(1.0)


def test_undefined_cases_give_nan_and_bad_shapes_raise() -> None:
    good = np.arange(5.0)
    for scores in (np.array([0.0, 1.0, np.nan, 3.0, 4.0]), np.full(5, 2.0), np.array([0, 1, np.inf, 3, 4.0])):
        result = rank_agreement(good, scores)
        assert math.isnan(result.spearman) and math.isnan(result.kendall)
    with pytest.raises(ValueError, match="differ in length"):
        rank_agreement(good, np.arange(4.0))
    with pytest.raises(ValueError, match="at least two"):
        rank_agreement(np.array([1.0]), np.array([2.0]))
