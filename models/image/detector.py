"""What every image flow detector here provides, so training, scoring and export share one path.

A detector splits into a frozen backbone (``extract``; its outputs can be cached) and a
trainable head that works on those features (``loss`` for training, ``predict`` for scores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.image.map_score import MAP_KINDS, MapScore, latent_nll_map

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_nll_per_dim(latents: list[torch.Tensor], log_jacobian: torch.Tensor) -> torch.Tensor:
    """Mean NLL per latent dimension under ``N(0, I)``, per image, in nats.

    ``nll = (Σ_s ½‖z_s‖² − log|det J| ) / D + ½ ln 2π`` with ``D = Σ_s dim(z_s)``.
    """
    squared = sum(0.5 * z.flatten(1).pow(2).sum(dim=1) for z in latents)
    dims = sum(int(math.prod(z.shape[1:])) for z in latents)
    return (squared - log_jacobian) / dims + LOG_SQRT_2PI


def image_score(anomaly_map: torch.Tensor) -> torch.Tensor:
    """Image score of every family: the maximum of its anomaly map, ``[N, 1, H, W] -> [N]``."""
    return torch.amax(anomaly_map, dim=(-2, -1)).flatten()


class DetectorMixin:
    """``forward(images) -> (score [N], nll [N], anomaly_map [N, 1, H, W])`` from extract + predict.

    Subclasses define ``extract(images) -> list[Tensor]`` (frozen backbone),
    ``loss(features) -> Tensor`` and ``predict(features) -> (score, nll, anomaly_map)``.
    """

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError  # pragma: no cover - interface

    def loss(self, features: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def score(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The detector protocol's ``score`` (as ``models.tabular.detector``): :meth:`predict`."""
        return self.predict(features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scores of normalised float images ``[N, 3, H, W]``."""
        return self.predict(self.extract(images))

    def initialise(self, features: list[torch.Tensor]) -> None:
        """Closed-form set-up from the training features before gradient training (default: none)."""

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (everything but the frozen backbone)."""
        return [p for p in self.parameters() if p.requires_grad]  # type: ignore[attr-defined]

    def train(self, mode: bool = True):  # noqa: ANN201 - returns self like nn.Module.train
        """Like ``nn.Module.train``, but the frozen backbone always stays in eval mode."""
        nn.Module.train(self, mode)  # type: ignore[arg-type]
        self.backbone_module().eval()
        return self

    def backbone_module(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError


class LatentMapDetector(DetectorMixin):
    """A detector whose anomalib head maps latents to the anomaly map (FastFlow, U-Flow).

    Subclasses define ``latents(features) -> (latents per scale, log|det J|)``, where the log-det
    is one tensor per image or one per scale (summed for the NLL), and have anomalib's
    ``criterion(latents, log_det)`` and ``anomaly_map_generator(latents)``.
    """

    def set_scoring(
        self,
        input_size: Sequence[int],
        flow: str,
        map_sigma: float,
        score_top_fraction: float,
        map_kind: str,
    ) -> None:
        """What both families set first: the map kind (checked), input size, flow kind and map scoring."""
        if map_kind not in MAP_KINDS:
            raise ValueError(f"map_kind must be one of {MAP_KINDS}, got {map_kind!r}")
        self.map_kind = map_kind
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.flow_kind = flow
        self.map_score = MapScore(self.input_size, map_sigma, score_top_fraction)

    def latents(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        raise NotImplementedError  # pragma: no cover - interface

    def loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """anomalib's loss of the family on the latents and log-dets."""
        latents, log_jacobian = self.latents(features)
        return self.criterion(latents, log_jacobian)  # type: ignore[attr-defined]

    def raw_anomaly_map(self, latents: list[torch.Tensor]) -> torch.Tensor:
        """The map before smoothing: anomalib's, or :func:`latent_nll_map` when ``map_kind`` says so."""
        if self.map_kind == "latent_nll":
            return latent_nll_map(latents, self.input_size)  # type: ignore[attr-defined]
        return self.anomaly_map_generator(latents)  # type: ignore[attr-defined]

    def predict(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The anomaly map (anomalib's, or ``latent_nll_map`` when ``map_kind`` says so) through
        ``map_score`` (smoothing, max / top-k mean), and the nll.

        The nll is :func:`gaussian_nll_per_dim` of the latents.
        """
        latents, log_jacobian = self.latents(features)
        anomaly_map, score = self.map_score(self.raw_anomaly_map(latents))  # type: ignore[attr-defined]
        total = log_jacobian if isinstance(log_jacobian, torch.Tensor) else sum(log_jacobian)
        return score, gaussian_nll_per_dim(latents, total), anomaly_map
