"""Helpers of the flow tests (a plain module: imported, not collected)."""

from __future__ import annotations

import torch


def randomise(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its (identity) initialisation so tests exercise real maps."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return module
