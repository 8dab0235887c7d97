"""Rebuild the exportable scorer of a tabular run directory (docs/contracts.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.factory import build_detector
from models.tabular.scorer import StandardizedTabularScorer
from training.run_files import load_weights


def build_tabular_scorer(
    family: str, config: dict[str, Any], mean: Any, std: Any
) -> StandardizedTabularScorer:
    """An untrained scorer of ``family``: standardisation followed by the detector."""
    detector = build_detector(family, config)
    return StandardizedTabularScorer(
        detector, torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    )


def load_tabular_scorer(run_dir: str | Path, run: dict[str, Any]) -> nn.Module:
    """``StandardizedTabularScorer`` with the run's weights, in eval mode.

    ``forward(x [N, F] raw) -> (score [N], nll [N])``: latent norm and NLL for USFlow /
    NonUSFlow, the model's own score and NaN for models without a likelihood.
    """
    for key in ("family", "config", "preprocessing"):
        if key not in run:
            raise ValueError(f"{run_dir}/run.json has no {key!r} entry")
    preprocessing = run["preprocessing"]
    scorer = build_tabular_scorer(run["family"], run["config"], preprocessing["mean"], preprocessing["std"])
    scorer.load_state_dict(load_weights(run_dir))
    return scorer.eval()
