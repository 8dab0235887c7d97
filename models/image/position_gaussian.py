"""Per-position Gaussian whitening: the first, closed-form layer of an image flow.

``y_p = W_p (x_p − μ_p)`` at every feature-map position ``p``, with ``W_p = L_p⁻¹`` and
``L_p L_pᵀ = Σ_p + ε I`` (Cholesky), ``μ_p`` and ``Σ_p`` the mean and covariance of the training
features at ``p``. It is an affine map, so ``log|det J| = Σ_p log det W_p = −Σ_p Σ_i log L_p,ii``
is the same for every input: a flow that starts with it is still uniformly scaling (the paper's
Eq. 4, ``det J = κ``), and its latent norm still ranks images as the likelihood does.

With the rest of the flow at the identity (the ``usf`` couplings start there), ``½‖y_p‖²`` is half
PaDiM's squared Mahalanobis distance at ``p`` (Defard et al., 2021, with ``ε = 0.01`` as there),
so the flow starts from PaDiM's per-position Gaussian and training by maximum likelihood only
adds what the couplings learn beyond it: dependence between neighbouring positions (3×3 subnets)
and non-Gaussian shape. ``μ`` and ``W`` are buffers, fitted once from the training features
(:meth:`PositionWhitening.fit`) before the couplings train, and not trained by gradient.
"""

from __future__ import annotations

import torch
from torch import nn

PADIM_SHRINKAGE = 0.01  # PaDiM's ε (anomalib's PadimModel: covariance + 0.01·I)


class PositionWhitening(nn.Module):
    """``x [N, C, H, W] -> (W_p (x_p − μ_p) [N, C, H, W], log|det J| [N])``; fitted by :meth:`fit`."""

    def __init__(self, channels: int, height: int, width: int, shrinkage: float = PADIM_SHRINKAGE) -> None:
        super().__init__()
        if shrinkage <= 0:
            raise ValueError(f"shrinkage must be > 0, got {shrinkage}")
        self.shrinkage = float(shrinkage)
        self.register_buffer("mean", torch.zeros(channels, height, width))
        eye = torch.eye(channels).expand(height, width, channels, channels).clone()
        self.register_buffer("whitener", eye)  # [H, W, C, C], lower triangular W_p = L_p⁻¹
        self.register_buffer("position_log_det", torch.zeros(height, width))  # log det W_p
        self.register_buffer("log_det", torch.zeros(()))  # Σ_p log det W_p

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """Set ``μ_p`` and ``W_p`` from training features ``[N, C, H, W]`` (N ≥ 2)."""
        if features.dim() != 4 or features.shape[1:] != self.mean.shape or features.shape[0] < 2:
            expected = ", ".join(map(str, self.mean.shape))
            raise ValueError(f"features must be [N >= 2, {expected}], got {list(features.shape)}")
        x = features.double()
        mean = x.mean(dim=0)
        centred = (x - mean).permute(2, 3, 1, 0)  # [H, W, C, N]
        covariance = centred @ centred.transpose(-1, -2) / (x.shape[0] - 1)
        channels = covariance.shape[-1]
        covariance = covariance + self.shrinkage * torch.eye(channels, dtype=covariance.dtype)
        cholesky = torch.linalg.cholesky(covariance)
        eye = torch.eye(channels, dtype=covariance.dtype).expand_as(cholesky)
        whitener = torch.linalg.solve_triangular(cholesky, eye, upper=False)
        self.mean.copy_(mean.float())
        self.whitener.copy_(whitener.float())
        position_log_det = -torch.log(torch.diagonal(cholesky, dim1=-2, dim2=-1)).sum(dim=-1)
        self.position_log_det.copy_(position_log_det.float())
        self.log_det.copy_(position_log_det.sum().float())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whitened features and the constant ``log|det J|`` per image."""
        centred = (x - self.mean).permute(2, 3, 1, 0)  # [H, W, C, N]
        whitened = (self.whitener @ centred).permute(3, 2, 0, 1)  # [N, C, H, W]
        return whitened, self.log_det.expand(x.shape[0])


def build_whitenings(
    shapes: list[tuple[int, int, int]], enabled: bool, shrinkage: float = PADIM_SHRINKAGE
) -> nn.ModuleList | None:
    """One :class:`PositionWhitening` per feature scale ``(C, H, W)``, or ``None`` when disabled."""
    if not enabled:
        return None
    return nn.ModuleList(PositionWhitening(*shape, shrinkage=shrinkage) for shape in shapes)
