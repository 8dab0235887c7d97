"""The asymmetric two-component Gaussian mixture of the paper's Appendix C.

``p(x) = ½ N(x; 𝟙_d, I) + ½ N(x; -𝟙_d, diag(θ_d))`` where the first half of ``θ_d`` is 5.0 and
the second half 0.5 (``d`` even). ``det Σ₁ = 1`` and ``det Σ₂ = 2.5^{d/2}``, so a flow has to
move volume unevenly between the components.
"""

from __future__ import annotations

import torch
from torch import distributions as D

WIDE_VARIANCE = 5.0
NARROW_VARIANCE = 0.5


def component_variances(dim: int) -> torch.Tensor:
    """``θ_d``: ``d/2`` entries 5.0 followed by ``d/2`` entries 0.5 (float64)."""
    if dim < 2 or dim % 2 != 0:
        raise ValueError(f"dim must be an even integer >= 2, got {dim}")
    half = dim // 2
    return torch.cat([torch.full((half,), WIDE_VARIANCE), torch.full((half,), NARROW_VARIANCE)]).double()


class AsymmetricGaussianMixture:
    """The mixture as a ``torch.distributions.MixtureSameFamily`` (exact sampling and density).

    Computation is in float64 so that the reference log-density carries no float32 rounding
    into the rank statistics.
    """

    def __init__(self, dim: int) -> None:
        variances = component_variances(dim)
        self.dim = dim
        means = torch.stack([torch.ones(dim), -torch.ones(dim)]).double()
        scales = torch.stack([torch.ones(dim, dtype=torch.float64), variances.sqrt()])
        self.distribution = D.MixtureSameFamily(
            D.Categorical(probs=torch.tensor([0.5, 0.5], dtype=torch.float64)),
            D.Independent(D.Normal(means, scales), 1),
        )

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` i.i.d. draws (float64, shape ``(n, d)``), reproducible from ``seed``."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        # torch.distributions samples from the global generator; fork it so the caller's
        # random state is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.distribution.sample((n,))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``ln p(x) = logsumexp_k (ln ½ + ln N(x; μ_k, Σ_k))`` per row (float64)."""
        return self.distribution.log_prob(x.double())
