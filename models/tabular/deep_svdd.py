"""Deep SVDD (Ruff et al. 2018): a bias-free encoder ``ω`` and a fixed centre ``c``.

Score: ``‖ω(x) - c‖²``. Bias terms are omitted and activations are unbounded so that the
trivial collapse ``ω ≡ c`` is not reachable by the architecture alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BiasFreeMLP(nn.Module):
    """``Linear(no bias) → LeakyReLU → … → Linear(no bias)`` over ``widths = [d_in, …, d_out]``.

    ``n_activations`` limits the LeakyReLUs to the first that many layers (default: after every
    layer but the last); the layers after them compose linearly.
    """

    def __init__(
        self, widths: Sequence[int], negative_slope: float = 0.01, n_activations: int | None = None
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("widths needs an input and an output size")
        hidden = len(widths) - 2
        activations = hidden if n_activations is None else min(int(n_activations), hidden)
        layers: list[nn.Module] = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out, bias=False))
            if index < activations:
                layers.append(nn.LeakyReLU(negative_slope))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepSVDD(nn.Module):
    """Encoder plus fixed centre ``c`` (a buffer, never trained)."""

    def __init__(self, encoder: nn.Module, code_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("center", torch.zeros(code_dim))

    def set_center(self, codes: torch.Tensor, eps: float = 0.1) -> None:
        """``c`` = mean code; coordinates with ``|c_i| < eps`` are pushed to ``±eps``."""
        center = codes.mean(dim=0)
        small = center.abs() < eps
        center[small & (center < 0)] = -eps
        center[small & (center >= 0)] = eps
        self.center.copy_(center)

    def squared_distance(self, x: torch.Tensor) -> torch.Tensor:
        """``‖ω(x) - c‖²`` per sample (the one-class loss term and the anomaly score)."""
        return (self.encoder(x) - self.center).pow(2).sum(dim=1)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """One-class objective ``mean ‖ω(x) - c‖²`` (weight decay is the optimiser's)."""
        return self.squared_distance(x).mean()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(score, nll)``; Deep SVDD has no likelihood, so ``nll`` is NaN."""
        score = self.squared_distance(x)
        return score, torch.full_like(score, float("nan"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`score`."""
        return self.score(x)
