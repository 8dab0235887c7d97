"""OneFlow (Maziarka et al. 2022): a constant-determinant flow fitted to a minimal-volume ball.

The flow ``φ`` maps normal rows into a ball of radius ``R`` around ``c``; because ``det J_φ``
is constant, the preimage of that ball has volume ``Vol(B_R) / |det J_φ|``. Training minimises
its logarithm, ``d · ln R − ln|det J_φ|`` (constants dropped), where ``R`` is the Bernstein
estimate of the ``(1 − p)``-quantile of the batch's latent radii ``‖φ(x) − c‖``, so that a
fraction ``p`` of the rows may stay outside. Score: the latent norm ``‖φ(x) − c‖``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.flows import CouplingFlow


def bernstein_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Bernstein-weighted ``q``-quantile of a 1-D sample.

    ``Q̂(q) = Σ_{i=0}^{n-1} C(n−1, i) qⁱ (1−q)^{n−1−i} · v_(i)`` over the sorted values
    ``v_(0) ≤ … ≤ v_(n−1)``: a smooth (differentiable) weighted order statistic.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    n = values.shape[0]
    ordered = torch.sort(values).values
    i = torch.arange(n, dtype=values.dtype, device=values.device)
    log_binomial = math.lgamma(n) - torch.lgamma(i + 1) - torch.lgamma(n - i)
    log_weights = log_binomial + i * math.log(q) + (n - 1 - i) * math.log1p(-q)
    return (torch.exp(log_weights) * ordered).sum()


class OneFlow(nn.Module):
    """A uniformly scaling flow trained on OneFlow's minimal-volume objective."""

    def __init__(self, flow: CouplingFlow, quantile: float = 0.05) -> None:
        super().__init__()
        if not flow.uniformly_scaling:
            raise ValueError("OneFlow needs a constant-determinant (additive coupling) flow")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile p must lie in (0, 1), got {quantile}")
        self.flow = flow
        self.quantile = float(quantile)

    def radius(self, x: torch.Tensor) -> torch.Tensor:
        """``‖φ(x) − c‖`` per row."""
        return self.flow.latent_norm(x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``d · ln R̂_{1−p} − ln|det J_φ|`` for the batch ``x``."""
        z, logdet = self.flow(x)
        radii = self.flow.base.squared_distance(z).clamp_min(1e-12).sqrt()
        radius = bernstein_quantile(radii, 1.0 - self.quantile)
        return self.flow.base.dim * torch.log(radius) - logdet.mean()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent norm, NaN)``: OneFlow is not trained as a density, so no NLL."""
        norm = self.radius(x)
        return norm, torch.full_like(norm, float("nan"))
