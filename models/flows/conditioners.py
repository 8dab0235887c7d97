"""Conditioner networks for coupling layers.

One network computes every conditioner output: ``out_factor = 1`` gives the shift ``f``
(additive coupling), ``out_factor = 2`` gives shift and log-scale ``(f, s)`` (affine coupling).
The two differ only in the width of the last layer, which starts at zero so that every
coupling layer is the identity at initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPConditioner(nn.Module):
    """MLP ``R^d -> R^(d * out_factor)`` for vector data."""

    def __init__(self, features: int, hidden: Sequence[int], out_factor: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.LeakyReLU(0.01)]
            width = size
        last = nn.Linear(width, features * out_factor)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvConditioner(nn.Module):
    """Convolutional network ``C x H x W -> (C * out_factor) x H x W`` for image data."""

    def __init__(
        self,
        channels: int,
        hidden: Sequence[int],
        out_factor: int = 1,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        width = channels
        for size in hidden:
            layers += [nn.Conv2d(width, size, kernel_size, padding=pad), nn.LeakyReLU(0.01)]
            width = size
        last = nn.Conv2d(width, channels * out_factor, kernel_size, padding=pad)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_conditioner(
    event_shape: tuple[int, ...], hidden: Sequence[int], out_factor: int, kernel_size: int = 3
) -> nn.Module:
    """Pick the MLP for vectors ``(d,)`` and the conv net for images ``(C, H, W)``."""
    if len(event_shape) == 1:
        return MLPConditioner(event_shape[0], hidden, out_factor)
    return ConvConditioner(event_shape[0], hidden, out_factor, kernel_size)
