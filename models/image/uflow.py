"""U-Flow (anomalib's ``UflowModel``) with an explicit ``flow`` choice, buildable offline.

anomalib's U-Flow feature extractors always request pretrained weights from the hub
(``pre_trained=True`` hard-coded; MS-CaiT downloads two CaiT checkpoints). Here the
extractor is either a frozen timm CNN built offline (:mod:`models.image.backbone`) with anomalib's
per-scale LayerNorm, again **without** a learnable affine part (see ``models.image.fastflow``),
or, with ``backbone.name == "mcait"``, anomalib's MS-CaiT extractor built without a download
(:mod:`models.image.mcait`; 448×448 input). The U-shaped flow graph, loss and anomaly map are
anomalib's.
"""

from __future__ import annotations

from collections.abc import Sequence

import FrEIA.framework as ff
import torch
from anomalib.models.image.uflow.anomaly_map import AnomalyMapGenerator
from anomalib.models.image.uflow.loss import UFlowLoss
from anomalib.models.image.uflow.torch_model import AffineCouplingSubnet, UflowModel
from torch import nn

from models.image.backbone import MCAIT, BackboneSpec, create_feature_extractor
from models.image.detector import LatentMapDetector
from models.image.flow_blocks import ChannelScale, block_for, uses_channel_scale
from models.image.mcait import OfflineMCaitFeatureExtractor, check_mcait_input_size
from models.image.position_gaussian import PADIM_SHRINKAGE, build_whitenings


class OfflineLayerNormExtractor(nn.Module):
    """Frozen timm CNN features at several scales, each LayerNorm-ed (no learnable affine)."""

    def __init__(
        self, backbone: BackboneSpec, input_size: tuple[int, int], out_indices: Sequence[int]
    ) -> None:
        super().__init__()
        self.feature_extractor = create_feature_extractor(backbone, out_indices)
        self.channels = self.feature_extractor.feature_info.channels()
        self.scale_factors = self.feature_extractor.feature_info.reduction()
        self.scales = range(len(self.scale_factors))
        self.feature_normalizations = nn.ModuleList(
            nn.LayerNorm([c, input_size[0] // s, input_size[1] // s], elementwise_affine=False)
            for c, s in zip(self.channels, self.scale_factors, strict=True)
        )

    def extract_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw backbone features."""
        return list(self.feature_extractor(images))

    def normalize_features(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """LayerNorm each scale."""
        return [norm(f) for norm, f in zip(self.feature_normalizations, features, strict=True)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.normalize_features(self.extract_features(images))


class USUflowModel(LatentMapDetector, UflowModel):
    """U-Flow: a U-shaped multi-scale flow, ``flow_steps`` blocks per scale (3×3 / 1×1 subnets).

    Anomaly map: anomalib's (``1 − mean_s upsample(exp(−½ mean_c z²))``); score: its maximum;
    nll: :func:`gaussian_nll_per_dim` over all output scales. Loss: anomalib's
    ``mean_n (Σ_s ½‖z_s‖² − log|det J|)``.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        flow: str = "usf",
        backbone: BackboneSpec | None = None,
        out_indices: Sequence[int] = (1, 2, 3),
        flow_steps: int = 4,
        affine_clamp: float = 2.0,
        affine_subnet_channels_ratio: float = 1.0,
        channel_scale: bool | None = None,
        map_sigma: float = 0.0,
        score_top_fraction: float = 0.0,
        position_whitening: bool = False,
        whitening_shrinkage: float = PADIM_SHRINKAGE,
        map_kind: str = "anomalib",
    ) -> None:
        nn.Module.__init__(self)
        self.set_scoring(input_size, flow, map_sigma, score_top_fraction, map_kind)
        self.affine_clamp = affine_clamp
        self.affine_subnet_channels_ratio = affine_subnet_channels_ratio
        self.permute_soft = False
        self._block, self._block_args = block_for(
            flow, {"affine_clamping": affine_clamp, "permute_soft": False}
        )
        backbone = backbone or BackboneSpec()
        self.feature_extractor: OfflineLayerNormExtractor | OfflineMCaitFeatureExtractor
        if backbone.name == MCAIT:
            check_mcait_input_size(self.input_size)
            self.feature_extractor = OfflineMCaitFeatureExtractor(backbone)
        else:
            self.feature_extractor = OfflineLayerNormExtractor(backbone, self.input_size, out_indices)
        self.flow = self.build_flow(flow_steps)
        # Optional first flow layer: PaDiM's per-position Gaussian (models.image.position_gaussian).
        if position_whitening and backbone.name == MCAIT:
            raise ValueError("position_whitening: CNN backbones only (MS-CaiT's tokens are not maps)")
        shapes = (
            [
                (c, self.input_size[0] // s, self.input_size[1] // s)
                for c, s in zip(
                    self.feature_extractor.channels, self.feature_extractor.scale_factors, strict=True
                )
            ]
            if position_whitening
            else []
        )
        self.whitenings = build_whitenings(shapes, position_whitening, whitening_shrinkage)
        # usf: a learnable per-channel scale on each output scale (constant log-det, still a USF).
        self.channel_scales = (
            nn.ModuleList(
                ChannelScale(node.inputs[0][0].output_dims[node.inputs[0][1]][0])
                for node in self.flow.out_nodes
            )
            if uses_channel_scale(flow, channel_scale)
            else None
        )
        self.anomaly_map_generator = AnomalyMapGenerator(self.input_size)
        self.criterion = UFlowLoss()

    def build_flow_stage(
        self, in_node: ff.Node, flow_steps: int, condition_node: ff.Node = None
    ) -> list[ff.Node]:
        """anomalib's stage (alternating 3×3 / 1×1 subnets) with the chosen block kind."""
        flow_size = in_node.output_dims[0][-1]
        nodes = []
        for step in range(flow_steps):
            subnet = AffineCouplingSubnet(3 if step % 2 == 0 else 1, self.affine_subnet_channels_ratio)
            nodes.append(
                ff.Node(
                    in_node,
                    self._block,
                    module_args={"subnet_constructor": subnet, **self._block_args},
                    conditions=condition_node,
                    name=f"flow{flow_size}_step{step}",
                )
            )
            in_node = nodes[-1]
        return nodes

    def backbone_module(self) -> nn.Module:
        if isinstance(self.feature_extractor, OfflineMCaitFeatureExtractor):
            return self.feature_extractor  # its LayerNorms are the CaiTs' own, frozen
        return self.feature_extractor.feature_extractor

    @torch.no_grad()
    def initialise(self, features: list[torch.Tensor]) -> None:
        """Fit the per-position whitening (if any) on the normalised training features."""
        if self.whitenings is not None:
            normalised = self.feature_extractor.normalize_features(features)
            for whitening, feature in zip(self.whitenings, normalised, strict=True):
                whitening.fit(feature)

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw features of the frozen backbone (CNN maps or CaiT tokens; normalised in the head)."""
        return list(self.feature_extractor.extract_features(images))

    def latents(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Latents per output scale and the total ``log|det J|`` per image."""
        normalised = self.feature_extractor.normalize_features(features)
        white_jacobian = None
        if self.whitenings is not None:
            whitened = [white(f) for white, f in zip(self.whitenings, normalised, strict=True)]
            normalised = [f for f, _ in whitened]
            white_jacobian = sum(j for _, j in whitened)
        latents, log_jacobian = self.encode(normalised)
        if white_jacobian is not None:
            log_jacobian = log_jacobian + white_jacobian
        if self.channel_scales is not None:
            scaled = [scale(z) for scale, z in zip(self.channel_scales, latents, strict=True)]
            latents = [z for z, _ in scaled]
            log_jacobian = log_jacobian + sum(j for _, j in scaled)
        return latents, log_jacobian
