"""Rebuild the exportable scorer of an image run directory (docs/contracts.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from models.factory import build_detector
from models.image.scorer import ImageScorer
from training.run_files import load_weights


def load_image_scorer(run_dir: str | Path, run: dict[str, Any]) -> nn.Module:
    """``ImageScorer`` of an image run, in eval mode, with the saved weights.

    The backbone is built without weights (nothing is read or downloaded) because
    ``weights.pt`` holds the whole scorer, frozen backbone included.
    """
    config = run.get("config") or {}
    if "family" not in config:
        raise ValueError(f"{run_dir}/run.json: config lacks family")
    try:
        detector = build_detector(config["family"], config)
    except ValueError as error:
        raise ValueError(f"{run_dir}/run.json: {error}") from error
    preprocessing = run["preprocessing"]
    scorer = ImageScorer(detector, preprocessing["mean"], preprocessing["std"])
    scorer.load_state_dict(load_weights(run_dir))
    return scorer.eval()
