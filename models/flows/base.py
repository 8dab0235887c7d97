"""Isotropic Gaussian base distributions ``N(c, σ² I)``.

``N(c, ½ I)`` aligns a flow's likelihood with the Deep SVDD objective (paper, Eq. 5):
``-ln N(z; c, ½ I) = ‖z - c‖² + (d/2) ln π``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class IsotropicGaussian(nn.Module):
    """``N(c, variance · I)`` over events of any shape; ``c`` is a fixed buffer."""

    def __init__(
        self, event_shape: tuple[int, ...], variance: float = 0.5, center: float | torch.Tensor = 0.0
    ) -> None:
        super().__init__()
        if variance <= 0:
            raise ValueError("variance must be positive")
        self.event_shape = tuple(event_shape)
        self.variance = float(variance)
        center_tensor = torch.as_tensor(center, dtype=torch.float32)
        self.register_buffer("center", center_tensor.expand(self.event_shape).clone())

    @property
    def dim(self) -> int:
        """Number of scalar entries ``d`` of one event."""
        return int(math.prod(self.event_shape))

    def squared_distance(self, z: torch.Tensor) -> torch.Tensor:
        """``‖z - c‖²`` per sample."""
        return (z - self.center).flatten(1).pow(2).sum(dim=1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``ln N(z; c, σ² I) = -‖z - c‖² / (2σ²) - (d/2) ln(2π σ²)``."""
        return -self.squared_distance(z) / (2 * self.variance) - 0.5 * self.dim * math.log(
            2 * math.pi * self.variance
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` events."""
        noise = torch.randn((n, *self.event_shape), generator=generator, device=self.center.device)
        return self.center + math.sqrt(self.variance) * noise.to(self.center.dtype)


def svdd_aligned_base(event_shape: tuple[int, ...], center: float | torch.Tensor = 0.0) -> IsotropicGaussian:
    """``N(c, ½ I)``: the base under which flow MLE is a regularised Deep SVDD (Eq. 5)."""
    return IsotropicGaussian(event_shape, variance=0.5, center=center)


def standard_normal_base(event_shape: tuple[int, ...]) -> IsotropicGaussian:
    """``N(0, I)``."""
    return IsotropicGaussian(event_shape, variance=1.0, center=0.0)
