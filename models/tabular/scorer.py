"""Exportable tabular scorer: standardisation inside the graph (docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class StandardizedTabularScorer(nn.Module):
    """``x ↦ score_fn(detector, (x - mean) / std)`` for raw rows in original units.

    ``score_fn`` returns ``(score, nll)`` per row; by default it is the detector's own
    ``score`` (``models.tabular.detector.TabularDetector``).

    >>> from models.factory import build_detector
    >>> detector = build_detector("usflow", {"features": 2, "n_blocks": 1, "hidden": [8], "seed": 0})
    >>> scorer = StandardizedTabularScorer(detector, mean=torch.tensor([10.0, 0.0]), std=torch.ones(2))
    >>> raw = torch.tensor([[10.0, 0.0], [13.0, 4.0]])
    >>> bool(torch.equal(scorer(raw)[0], detector.score(raw - torch.tensor([10.0, 0.0]))[0]))
    True
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
        return self.detector.score(standardized)
