"""Standardisation of the mixture samples with training-set statistics.

``s(x) = (x - m) / σ`` is affine with constant Jacobian, so it changes neither a USF's
uniform scaling nor any ranking; it only adds ``ln|det J_s| = -Σ_j ln σ_j`` to log-densities.
Every model of the experiment sees standardised inputs (the usual tabular preprocessing), which
keeps the flows from spending their first epochs learning the data's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Standardization:
    """Per-feature mean ``m`` and standard deviation ``σ`` (float32)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, train: torch.Tensor) -> Standardization:
        """Statistics of ``train`` (rows are samples); constant features keep ``σ = 1``."""
        std = train.std(dim=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(train.mean(dim=0).float(), std.float())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - m) / σ`` as float32."""
        return ((x - self.mean) / self.std).float()

    @property
    def log_abs_det(self) -> float:
        """``ln|det J_s| = -Σ_j ln σ_j``: add it to a log-density of ``s(x)`` to get one of ``x``."""
        return float(-self.std.double().log().sum())
