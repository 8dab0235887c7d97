"""Example inputs built from a run's input spec: the trace example and the parity probes."""

from __future__ import annotations

from typing import Any

import torch


def probe_input(run: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    """A raw input batch of the run's kind with plausible values.

    Tabular: ``mean + std · ε`` with ``ε ~ N(0, I)`` in original units (float32, N×F), using the
    run's standardisation statistics when present. Image: uniform random ``uint8`` N×H×W×C.
    """
    generator = torch.Generator().manual_seed(seed)
    spec = run["input"]
    if run["kind"] == "tabular":
        features = int(spec["features"])
        stats = run.get("preprocessing") or {}
        mean = torch.as_tensor(stats.get("mean", [0.0] * features), dtype=torch.float32)
        std = torch.as_tensor(stats.get("std", [1.0] * features), dtype=torch.float32)
        return mean + std * torch.randn(batch, features, generator=generator)
    shape = (batch, int(spec["height"]), int(spec["width"]), int(spec["channels"]))
    return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
