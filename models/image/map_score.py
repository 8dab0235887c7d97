"""The returned anomaly map (optionally Gaussian-smoothed) and the image score (max or top-k mean).

``map_out = G_σ * map`` and ``score = mean of the k largest values of map`` (the raw map) with
``k = max(1, round(f · H·W))``; ``f = 0`` is the plain maximum and ``σ = 0`` no smoothing (the
models' behaviour in anomalib). On held-out good images with synthetic defects the top-k mean
already averages out single hot pixels and smoothing the map before it lowered the image score's
AUROC, while smoothing raised the pixel AUROC (docs/image-benchmark.md). The blur is
anomalib's ``GaussianBlur2d`` (kernel ``2⌊4σ + ½⌋ + 1``, reflect padding), as anomalib's
PaDiM / PatchCore / STFPM post-processing uses with σ = 4; ``k`` is fixed by the input size, so
both steps export to ONNX as a convolution and a ``TopK``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

# How a latent-map detector (FastFlow, U-Flow) turns its latents into the anomaly map:
# "anomalib": anomalib's generator (FastFlow: -mean_s up(exp(-½ mean_c z²)));
# "latent_nll": the flow's own per-position NLL, mean_s up(½ mean_c z_s²) (latent_nll_map).
MAP_KINDS = ("anomalib", "latent_nll")


def latent_nll_map(latents: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
    """``mean_s upsample(½ mean_c z_s²)``: the latent NLL per position, ``[N, 1, H, W]``.

    For a uniformly scaling flow the log-det is the same at every input, so this map ranks the
    positions of one scale as their likelihood does; unlike anomalib's ``exp(−½ mean_c z²)`` it
    does not saturate far from the mode.
    """
    size = (int(input_size[0]), int(input_size[1]))
    maps = [
        F.interpolate(
            0.5 * z.pow(2).mean(dim=1, keepdim=True), size=size, mode="bilinear", align_corners=False
        )
        for z in latents
    ]
    return torch.stack(maps, dim=-1).mean(dim=-1)


class MapScore(nn.Module):
    """``anomaly_map [N, 1, H, W] -> (smoothed map [N, 1, H, W], score of the raw map [N])``."""

    def __init__(self, input_size: Sequence[int], sigma: float = 0.0, top_fraction: float = 0.0) -> None:
        super().__init__()
        if sigma < 0 or not 0 <= top_fraction <= 1:
            raise ValueError(
                f"map_sigma must be >= 0 and score_top_fraction in [0, 1], got {sigma}, {top_fraction}"
            )
        self.sigma = float(sigma)
        self.top_k = max(1, round(top_fraction * int(input_size[0]) * int(input_size[1])))
        self.blur: nn.Module | None = None
        if self.sigma > 0:
            from anomalib.models.components.filters import GaussianBlur2d

            self.blur = GaussianBlur2d(sigma=(self.sigma, self.sigma), channels=1)

    def forward(self, anomaly_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = anomaly_map.flatten(1)
        score = flat.amax(dim=1) if self.top_k == 1 else flat.topk(self.top_k, dim=1).values.mean(dim=1)
        return (self.blur(anomaly_map) if self.blur is not None else anomaly_map), score
