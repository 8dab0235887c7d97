"""CFlow (anomalib's ``CflowModel``) with an explicit ``flow`` choice and a batch-independent map.

anomalib normalises CFlow's anomaly map by the maximum log-likelihood over the *whole batch*
(``exp(log p − max_batch log p)``), so an image's score changes with the images it is scored
with. Here each position's map value is its own negative log-likelihood per dimension, which
depends on that image alone; the training objective is anomalib's (``−log σ(log p / C)`` over
random feature fibres, conditioned on a 2D sinusoidal positional encoding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.models.image.cflow.torch_model import CflowModel
from anomalib.models.image.cflow.utils import get_logp, positional_encoding_2d, subnet_fc
from FrEIA.framework import SequenceINN
from torch import nn

from models.image.backbone import BackboneSpec, create_feature_extractor
from models.image.detector import DetectorMixin
from models.image.flow_blocks import ChannelScale, block_for, uses_channel_scale
from models.image.map_score import MapScore
from models.image.position_gaussian import PADIM_SHRINKAGE, build_whitenings


class USCflowModel(DetectorMixin, CflowModel):
    """CFlow: per scale, a conditional flow of ``coupling_blocks`` blocks on feature fibres.

    Anomaly map: ``mean_s upsample(−log p_s(x_hw | pos) / C_s)``; score: its maximum;
    nll: the mean of the map's per-scale NLL per dimension over positions and scales.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        flow: str = "usf",
        backbone: BackboneSpec | None = None,
        out_indices: Sequence[int] = (2, 3, 4),
        condition_vector: int = 128,
        coupling_blocks: int = 8,
        clamp_alpha: float = 1.9,
        fibers_per_step: int = 2048,
        channel_scale: bool | None = None,
        map_sigma: float = 0.0,
        score_top_fraction: float = 0.0,
        position_whitening: bool = False,
        whitening_shrinkage: float = PADIM_SHRINKAGE,
    ) -> None:
        nn.Module.__init__(self)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.flow_kind = flow
        self.map_score = MapScore(self.input_size, map_sigma, score_top_fraction)
        self.condition_vector = condition_vector
        self.fibers_per_step = fibers_per_step
        self.encoder = create_feature_extractor(backbone or BackboneSpec(), out_indices)
        self.pool_dims = self.encoder.feature_info.channels()
        scales = self.encoder.feature_info.reduction()
        # Optional first flow layer: PaDiM's per-position Gaussian (models.image.position_gaussian).
        shapes = [
            (c, self.input_size[0] // s, self.input_size[1] // s)
            for c, s in zip(self.pool_dims, scales, strict=True)
        ]
        self.whitenings = build_whitenings(shapes, position_whitening, whitening_shrinkage)
        block, block_args = block_for(
            flow, {"affine_clamping": clamp_alpha, "global_affine_type": "SOFTPLUS", "permute_soft": False}
        )
        self.decoders = nn.ModuleList()
        for channels in self.pool_dims:
            coder = SequenceINN(channels)
            for _ in range(coupling_blocks):
                coder.append(
                    block, cond=0, cond_shape=(condition_vector,), subnet_constructor=subnet_fc, **block_args
                )
            self.decoders.append(coder)
        # usf: a learnable per-channel scale after each decoder (constant log-det, still a USF).
        self.channel_scales = (
            nn.ModuleList(ChannelScale(c) for c in self.pool_dims)
            if uses_channel_scale(flow, channel_scale)
            else None
        )
        # Positional encodings are constants of the input size: buffers keep them in exported graphs.
        for index, scale in enumerate(scales):
            encoding = positional_encoding_2d(
                condition_vector, self.input_size[0] // scale, self.input_size[1] // scale
            )
            self.register_buffer(f"position_{index}", encoding, persistent=False)

    def backbone_module(self) -> nn.Module:
        return self.encoder

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw feature maps of the frozen backbone."""
        return list(self.encoder(images))

    @torch.no_grad()
    def initialise(self, features: list[torch.Tensor]) -> None:
        """Fit the per-position whitening (if any) on the training features."""
        if self.whitenings is not None:
            for whitening, feature in zip(self.whitenings, features, strict=True):
                whitening.fit(feature)

    def _fibres(
        self, index: int, feature: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Fibres ``[N·h·w, C]`` (whitened, if enabled), positional conditions ``[N·h·w, P]`` and
        the whitening's ``log det W_p`` per fibre ``[N·h·w]`` (``None`` without whitening)."""
        batch, channels = feature.shape[:2]
        position_log_det = None
        if self.whitenings is not None:
            feature, _ = self.whitenings[index](feature)
            position_log_det = (
                self.whitenings[index].position_log_det.reshape(1, -1).expand(batch, -1).reshape(-1)
            )
        fibres = feature.permute(0, 2, 3, 1).reshape(-1, channels)
        position = getattr(self, f"position_{index}").permute(1, 2, 0).reshape(1, -1, self.condition_vector)
        conditions = position.expand(batch, -1, -1).reshape(-1, self.condition_vector)
        return fibres, conditions, position_log_det

    def _log_prob_per_dim(
        self,
        index: int,
        fibres: torch.Tensor,
        conditions: torch.Tensor,
        position_log_det: torch.Tensor | None,
    ) -> torch.Tensor:
        z, log_jacobian = self.decoders[index](fibres, [conditions])
        if position_log_det is not None:
            log_jacobian = log_jacobian + position_log_det
        if self.channel_scales is not None:
            z, scale_jacobian = self.channel_scales[index](z)
            log_jacobian = log_jacobian + scale_jacobian
        return get_logp(fibres.shape[1], z, log_jacobian) / fibres.shape[1]

    def loss(self, features: list[torch.Tensor]) -> torch.Tensor:
        """anomalib's CFlow loss ``mean(−log σ(log p / C))``, summed over scales (all fibres in eval mode)."""
        total = features[0].new_zeros(())
        for index, feature in enumerate(features):
            fibres, conditions, position_log_det = self._fibres(index, feature)
            if self.training:  # a random subset of fibres per step, as anomalib's fibre batches
                chosen = torch.randperm(fibres.shape[0], device=fibres.device)[: self.fibers_per_step]
                fibres, conditions = fibres[chosen], conditions[chosen]
                if position_log_det is not None:
                    position_log_det = position_log_det[chosen]
            log_prob = self._log_prob_per_dim(index, fibres, conditions, position_log_det)
            total = total + (-F.logsigmoid(log_prob)).mean()
        return total

    def predict(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps, nlls = [], []
        for index, feature in enumerate(features):
            batch, _, height, width = feature.shape
            nll = -self._log_prob_per_dim(index, *self._fibres(index, feature)).reshape(
                batch, 1, height, width
            )
            nlls.append(nll.flatten(1).mean(dim=1))
            maps.append(F.interpolate(nll, size=self.input_size, mode="bilinear", align_corners=False))
        anomaly_map, score = self.map_score(torch.stack(maps, dim=-1).mean(dim=-1))
        return score, torch.stack(nlls, dim=-1).mean(dim=-1), anomaly_map
