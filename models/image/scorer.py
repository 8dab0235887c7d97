"""The exportable image scorer: raw uint8 images in, ``(score, nll, anomaly_map)`` out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.flows.lu import LUAffine


class ImageScorer(nn.Module):
    """``forward(images: uint8 [N, H, W, C]) -> (score [N], nll [N], anomaly_map [N, 1, H, W])``.

    Inside: ``x = (images / 255 − mean) / std`` per channel (NHWC → NCHW), then the detector's
    frozen backbone and flow head. Grayscale input (``C = 1``) is repeated to three channels.
    Every output row depends on its own image only.
    """

    def __init__(self, detector: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def train(self, mode: bool = True) -> ImageScorer:
        """Switch mode; in eval mode also materialise every LU map's matrix and inverse.

        ``LUAffine`` drops its cached matrices on every ``train()`` call (exporters call
        ``train(False)`` before tracing), and building them again inside a trace would put
        ``torch.diag`` / triangular solves into the graph, which ONNX lacks. Warming the caches
        here makes exported graphs plain matrix products.
        """
        super().train(mode)
        if not mode:
            with torch.no_grad():
                for layer in self.modules():
                    if isinstance(layer, LUAffine):
                        layer.weight()
                        layer.inverse_weight()
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC → normalised float NCHW with three channels."""
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.detector(self.normalize(images))
