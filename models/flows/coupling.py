"""Masked coupling layers (Dinh et al. 2015, 2017).

Every layer maps ``x`` to ``(y, log|det J|)`` with one log-det per sample, and has an exact
``inverse``. Masks keep ``m ⊙ x`` unchanged, so the conditioner sees the same input in both
directions.
"""

from __future__ import annotations

import torch
from torch import nn


def _sum_per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(dim=1)


class MaskedAdditiveCoupling(nn.Module):
    """``y = x + (1 - m) ⊙ f(m ⊙ x)``; volume preserving, ``log|det J| = 0``."""

    def __init__(self, conditioner: nn.Module, mask: torch.Tensor) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = self.conditioner(self.mask * x)
        y = x + (1 - self.mask) * shift
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        shift = self.conditioner(self.mask * y)
        return y - (1 - self.mask) * shift


class MaskedAffineCoupling(nn.Module):
    """``y = m ⊙ x + (1 - m) ⊙ (x · g(m ⊙ x) + f(m ⊙ x))`` with ``g = exp(s)``.

    The log-scale is bounded, ``s = clamp · tanh(s_raw / clamp)``, so ``|log g| < clamp``;
    ``log|det J| = Σ (1 - m) ⊙ s``.
    """

    def __init__(self, conditioner: nn.Module, mask: torch.Tensor, clamp: float = 2.0) -> None:
        super().__init__()
        if clamp <= 0:
            raise ValueError("clamp must be positive")
        self.conditioner = conditioner
        self.clamp = float(clamp)
        self.register_buffer("mask", mask)

    def _shift_and_log_scale(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.conditioner(masked).chunk(2, dim=1)
        log_scale = self.clamp * torch.tanh(raw / self.clamp)
        return shift, (1 - self.mask) * log_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_and_log_scale(self.mask * x)
        y = self.mask * x + (1 - self.mask) * (x * torch.exp(log_scale) + shift)
        return y, _sum_per_sample(log_scale)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        shift, log_scale = self._shift_and_log_scale(self.mask * y)
        return self.mask * y + (1 - self.mask) * (y - shift) * torch.exp(-log_scale)
