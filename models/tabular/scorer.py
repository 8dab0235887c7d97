"""Exportable tabular scorer: standardisation inside the graph (docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class StandardizedTabularScorer(nn.Module):
    """``x ↦ score_fn(detector, (x - mean) / std)`` for raw rows in original units.

    ``score_fn`` returns ``(score, nll)`` per row; by default it calls ``detector.score``
    when present (flows: latent norm and NLL), else ``detector(x)``.
    """

    def __init__(
        self,
        detector: nn.Module,
        mean: torch.Tensor,
        std: torch.Tensor,
        score_fn: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self._score_fn = score_fn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        standardized = (x - self.mean) / self.std
        if self._score_fn is not None:
            return self._score_fn(self.detector, standardized)
        if hasattr(self.detector, "score"):
            return self.detector.score(standardized)
        return self.detector(standardized)
