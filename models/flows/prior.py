"""Log-normal prior on the Jacobian determinant of a USFlow (paper, Appendix B.2).

Each diagonal entry ``u_i`` of every LU layer gets an independent bilateral log-normal prior
``BiLogNormal(0, σ₀²)``, i.e. ``ln|u_i| ~ N(0, σ₀²)``, with ``σ₀ = σ / (c·h·w)`` for a layer
acting on ``c×h×w`` tensors (``c = d``, ``h·w = 1`` for vectors), as the paper specifies.

Density: ``ln p(u) = -ln 2 - ln|u| - ln(σ₀ √(2π)) - (ln|u|)² / (2σ₀²)``.

Note: with that ``σ₀`` the variance of ``h·w · Σ_i ln|u_i|`` is ``σ²/c``, so the induced prior
on ``ln|det J|`` is tighter than ``N(0, σ²)`` for ``c > 1``; we keep the paper's ``σ₀``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.flows.lu import LUAffine


def bilateral_log_normal_log_prob(u_log_abs: torch.Tensor, sigma0: float) -> torch.Tensor:
    """``ln BiLogNormal(u; 0, σ₀²)`` given ``ln|u|``, summed over entries."""
    return (
        -math.log(2.0)
        - u_log_abs
        - math.log(sigma0 * math.sqrt(2 * math.pi))
        - u_log_abs.pow(2) / (2 * sigma0**2)
    ).sum()


class LogNormalDeterminantPrior(nn.Module):
    """Sum of the bilateral log-normal log-priors of every learnable LU diagonal in a flow."""

    def __init__(self, sigma: float, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError("sigma must be positive")
        self.sigma = float(sigma)
        self.sigma0 = self.sigma / float(math.prod(event_shape))

    def log_prob(self, flow: nn.Module) -> torch.Tensor:
        """``Σ_layers Σ_i ln BiLogNormal(U_ii; 0, σ₀²)`` over learnable LU diagonals."""
        total: torch.Tensor | None = None
        for layer in flow.modules():
            if isinstance(layer, LUAffine) and isinstance(layer.log_diag, nn.Parameter):
                term = bilateral_log_normal_log_prob(layer.log_diag, self.sigma0)
                total = term if total is None else total + term
        if total is None:
            raise ValueError("the flow has no LU layer with a learnable diagonal")
        return total
