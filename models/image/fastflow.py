"""FastFlow (anomalib's ``FastflowModel``) with an explicit ``flow`` choice and an offline backbone.

Differences from anomalib, each on purpose:
- the backbone is any timm CNN built offline (:mod:`models.image.backbone`);
- the LayerNorm before each flow has **no learnable affine part** (``elementwise_affine=False``,
  i.e. anomalib's LayerNorm frozen at its initial identity scale). anomalib's trainable LayerNorm
  scale is outside the flow, so the likelihood does not account for it: training shrinks it and
  the "NLL" falls without bound, which also keeps early stopping from ever firing;
- the coupling blocks come from :func:`models.image.flow_blocks.block_for`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from anomalib.models.image.fastflow.anomaly_map import AnomalyMapGenerator
from anomalib.models.image.fastflow.loss import FastflowLoss
from anomalib.models.image.fastflow.torch_model import FastflowModel, subnet_conv_func
from FrEIA.framework import SequenceINN
from torch import nn

from models.image.backbone import BackboneSpec, create_feature_extractor
from models.image.detector import LatentMapDetector
from models.image.flow_blocks import ChannelScale, block_for, uses_channel_scale
from models.image.position_gaussian import PADIM_SHRINKAGE, build_whitenings


class USFastflowModel(LatentMapDetector, FastflowModel):
    """FastFlow: per scale, 2D flow of ``flow_steps`` blocks alternating 3×3 and 1×1 subnets.

    Anomaly map: anomalib's (``-mean_s upsample(exp(-½ mean_c z²))``); score: its maximum;
    nll: :func:`gaussian_nll_per_dim` over all scales. Loss: anomalib's
    ``mean_n Σ_s (½‖z_s‖² − log|det J_s|)``.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        flow: str = "usf",
        backbone: BackboneSpec | None = None,
        out_indices: Sequence[int] = (1, 2, 3),
        flow_steps: int = 8,
        conv3x3_only: bool = False,
        hidden_ratio: float = 1.0,
        clamp: float = 2.0,
        channel_scale: bool | None = None,
        map_sigma: float = 0.0,
        score_top_fraction: float = 0.0,
        position_whitening: bool = False,
        whitening_shrinkage: float = PADIM_SHRINKAGE,
        map_kind: str = "anomalib",
    ) -> None:
        nn.Module.__init__(self)
        self.set_scoring(input_size, flow, map_sigma, score_top_fraction, map_kind)
        self.feature_extractor = create_feature_extractor(backbone or BackboneSpec(), out_indices)
        channels = self.feature_extractor.feature_info.channels()
        scales = self.feature_extractor.feature_info.reduction()
        shapes = [
            (c, self.input_size[0] // s, self.input_size[1] // s)
            for c, s in zip(channels, scales, strict=True)
        ]
        self.norms = nn.ModuleList(nn.LayerNorm(list(shape), elementwise_affine=False) for shape in shapes)
        # Optional first flow layer: PaDiM's per-position Gaussian, fitted in closed form
        # (models.image.position_gaussian; constant log-det, so the flow stays uniformly scaling).
        self.whitenings = build_whitenings(shapes, position_whitening, whitening_shrinkage)
        block, block_args = block_for(flow, {"affine_clamping": clamp, "permute_soft": False})
        self.fast_flow_blocks = nn.ModuleList()
        for shape in shapes:
            nodes = SequenceINN(*shape)
            for step in range(flow_steps):
                kernel_size = 1 if step % 2 == 1 and not conv3x3_only else 3
                nodes.append(
                    block, subnet_constructor=subnet_conv_func(kernel_size, hidden_ratio), **block_args
                )
            self.fast_flow_blocks.append(nodes)
        # usf: a learnable per-channel scale after each flow (constant log-det, still a USF).
        self.channel_scales = (
            nn.ModuleList(ChannelScale(shape[0]) for shape in shapes)
            if uses_channel_scale(flow, channel_scale)
            else None
        )
        self.anomaly_map_generator = AnomalyMapGenerator(input_size=self.input_size)
        self.criterion = FastflowLoss()

    def backbone_module(self) -> nn.Module:
        return self.feature_extractor

    @torch.no_grad()
    def initialise(self, features: list[torch.Tensor]) -> None:
        """Fit the per-position whitening (if any) on the normalised training features."""
        if self.whitenings is None:
            return
        for norm, whitening, feature in zip(self.norms, self.whitenings, features, strict=True):
            whitening.fit(norm(feature))

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw feature maps of the frozen backbone."""
        return list(self.feature_extractor(images))

    def latents(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Latents and ``log|det J|`` per image, one of each per scale."""
        latents, jacobians = [], []
        stages = zip(self.norms, self.fast_flow_blocks, features, strict=True)
        for index, (norm, block, feature) in enumerate(stages):
            h = norm(feature)
            white_jacobian = None
            if self.whitenings is not None:
                h, white_jacobian = self.whitenings[index](h)
            z, jacobian = block(h)
            if white_jacobian is not None:
                jacobian = jacobian + white_jacobian
            if self.channel_scales is not None:
                z, scale_jacobian = self.channel_scales[index](z)
                jacobian = jacobian + scale_jacobian
            latents.append(z)
            jacobians.append(jacobian)
        return latents, jacobians
