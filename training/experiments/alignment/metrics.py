"""Rank agreement between a reference and a model's scores (Spearman ρ, Kendall τ-b).

Both come from ``scipy.stats``; ties get average ranks (ρ) and the τ-b tie correction.
Sign convention of this experiment: a *faithful* score gives ``+1``. The latent norm grows as
density falls, so it is compared with the true *negative* log-likelihood; the estimated
log-likelihood is compared with the true log-likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class RankAgreement:
    """Spearman ρ and Kendall τ-b between two equally long samples."""

    spearman: float
    kendall: float


def rank_agreement(reference: np.ndarray, scores: np.ndarray) -> RankAgreement:
    """Spearman ρ (Pearson correlation of average ranks) and Kendall τ-b of the pairs.

    ``τ_b = (P - Q) / sqrt((P + Q + T_x)(P + Q + T_y))`` with ``P``/``Q`` concordant/discordant
    pairs and ``T_x``/``T_y`` pairs tied only in one sample. Non-finite scores (a diverged
    model) or a constant sample give NaN, never an exception.
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if reference.shape != scores.shape:
        raise ValueError(f"reference and scores differ in length: {reference.size} vs {scores.size}")
    if reference.size < 2:
        raise ValueError("rank agreement needs at least two samples")
    if not (np.isfinite(reference).all() and np.isfinite(scores).all()):
        return RankAgreement(math.nan, math.nan)
    if np.ptp(reference) == 0 or np.ptp(scores) == 0:
        return RankAgreement(math.nan, math.nan)
    rho = stats.spearmanr(reference, scores).statistic
    tau = stats.kendalltau(reference, scores, variant="b").statistic
    return RankAgreement(float(rho), float(tau))


def latent_alignment(true_log_prob: np.ndarray, latent_norm: np.ndarray) -> RankAgreement:
    """Agreement of the latent norm ``‖φ(x) - c‖`` with the true NLL ``-ln p(x)`` (+1 = faithful)."""
    return rank_agreement(-np.asarray(true_log_prob, dtype=np.float64), latent_norm)


def likelihood_agreement(true_log_prob: np.ndarray, estimated_log_prob: np.ndarray) -> RankAgreement:
    """Agreement of a flow's estimated ``ln p̂(x)`` with the true ``ln p(x)``."""
    return rank_agreement(true_log_prob, estimated_log_prob)
