"""DOHSC and DO2HSC (Zhang et al., ICLR 2024): Deep SVDD with an orthogonal projection layer.

A bias-free encoder ``ω`` is followed by a whitening projection ``Z̃ = Z W`` with
``W = √n · V S⁻¹ Vᵀ`` from the SVD ``Z = U S Vᵀ`` of the batch codes, so that
``Z̃ᵀ Z̃ = n·I`` (the paper's ``Z̃ᵀZ̃ = I`` up to the factor ``n``, which keeps the scale of a row
independent of the batch size). In training the projection comes from each batch; for scoring
it is fixed to the projection of the whole training set, so a row's score never depends on the
rest of the batch.

- DOHSC: soft-boundary one-class loss ``R² + (1/ν)·mean(max(0, d² − R²))`` with ``d = ‖z̃ − c‖``
  and ``R²`` the ``(1 − ν)``-quantile of the batch's ``d²``; score ``d²`` (outside when ``d² > R²``).
- DO2HSC: bi-hypersphere compression into the shell ``r_min ≤ d ≤ r_max`` (the ``ν`` and
  ``1 − ν`` quantiles of the training distances after pretraining); loss
  ``mean(max(0, d − r_max) + max(0, r_min − d))``; score ``max(d − r_max, r_min − d)``.
"""

from __future__ import annotations

import torch
from torch import nn


def whitening_matrix(codes: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """``W = √n · V S⁺ Vᵀ`` from the thin SVD of ``codes`` (n×k), so ``(ZW)ᵀ(ZW) = n·I``.

    ``S⁺`` inverts singular values above ``rtol · s_max`` and zeroes the rest (a batch smaller
    than ``k`` is rank deficient). Computed without gradient: the SVD's backward pass is
    undefined for repeated singular values; the projection acts as a per-batch constant.
    """
    with torch.no_grad():
        _, singular, vh = torch.linalg.svd(codes, full_matrices=False)
        keep = singular > rtol * singular.max().clamp_min(1e-30)
        scale = torch.where(keep, codes.shape[0] ** 0.5 / singular.clamp_min(1e-30), 0.0)
        return (vh.T * scale) @ vh


class OrthogonalProjectionEncoder(nn.Module):
    """``x ↦ ω(x) W``: batch whitening in training, the stored training-set ``W`` in eval."""

    def __init__(self, encoder: nn.Module, code_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("projection", torch.eye(code_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.encoder(x)
        if self.training:
            return codes @ whitening_matrix(codes)
        return codes @ self.projection

    @torch.no_grad()
    def freeze_projection(self, x: torch.Tensor) -> None:
        """Store the whitening matrix of the codes of all training rows ``x``."""
        self.projection.copy_(whitening_matrix(self.encoder(x)))


class DOHSC(nn.Module):
    """Deep orthogonal hypersphere compression (single sphere)."""

    def __init__(self, encoder: OrthogonalProjectionEncoder, nu: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < nu < 1.0:
            raise ValueError(f"nu must lie in (0, 1), got {nu}")
        self.encoder = encoder
        self.nu = float(nu)
        code_dim = encoder.projection.shape[0]
        self.register_buffer("center", torch.zeros(code_dim))
        self.register_buffer("radius_sq", torch.zeros(()))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """``d = ‖z̃(x) − c‖`` per row."""
        return (self.encoder(x) - self.center).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Fix ``W`` and ``c`` (mean projected code) from all training rows ``x``."""
        self.encoder.freeze_projection(x)
        was_training = self.training
        self.eval()
        self.center.copy_(self.encoder(x).mean(dim=0))
        self.train(was_training)

    @torch.no_grad()
    def set_radii(self, x: torch.Tensor) -> None:
        """``R²`` = the ``(1 − ν)``-quantile of ``d²`` over the training rows ``x``."""
        self.radius_sq.copy_(torch.quantile(self.distance(x).pow(2), 1.0 - self.nu))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``R² + (1/ν)·mean(max(0, d² − R²))`` with ``R²`` the batch quantile (no gradient)."""
        dist_sq = self.distance(x).pow(2)
        radius_sq = torch.quantile(dist_sq.detach(), 1.0 - self.nu)
        return radius_sq + torch.relu(dist_sq - radius_sq).mean() / self.nu

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d², NaN)``; rows with ``d² > R²`` lie outside the hypersphere.

        The score is ``d²`` rather than ``d² − R²`` (same ranking): the difference loses
        relative precision near the boundary, which float32 exports would amplify.
        """
        value = self.distance(x).pow(2)
        return value, torch.full_like(value, float("nan"))


class DO2HSC(DOHSC):
    """Deep orthogonal bi-hypersphere compression: normal rows live in a shell."""

    def __init__(self, encoder: OrthogonalProjectionEncoder, nu: float = 0.05) -> None:
        super().__init__(encoder, nu)
        self.register_buffer("r_min", torch.zeros(()))
        self.register_buffer("r_max", torch.zeros(()))

    @torch.no_grad()
    def set_radii(self, x: torch.Tensor) -> None:
        """``r_min``, ``r_max`` = the ``ν`` and ``1 − ν`` quantiles of ``d`` over rows ``x``."""
        dist = self.distance(x)
        self.r_min.copy_(torch.quantile(dist, self.nu))
        self.r_max.copy_(torch.quantile(dist, 1.0 - self.nu))
        self.radius_sq.copy_(self.r_max.pow(2))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``mean(max(0, d − r_max) + max(0, r_min − d))``."""
        dist = self.distance(x)
        return (torch.relu(dist - self.r_max) + torch.relu(self.r_min - dist)).mean()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(max(d − r_max, r_min − d), NaN)``: distance outside the shell (negative inside)."""
        dist = self.distance(x)
        value = torch.maximum(dist - self.r_max, self.r_min - dist)
        return value, torch.full_like(value, float("nan"))
