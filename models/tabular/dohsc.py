"""DOHSC and DO2HSC (Zhang et al., ICLR 2024): Deep SVDD with an orthogonal projection layer.

Checked against the authors' tabular code (github.com/wownice333/DOHSC-DO2HSC,
``demo_tabular_anomaly_detection``); deviations are listed below.

Encoder (:func:`hypersphere_encoder`): bias-free ``Linear(d, 500) → LeakyReLU → Linear(500, 30)
→ Linear(30, 30)`` (the original has no activation between the last two layers), weights drawn
from ``N(0, 0.02²)``, followed by a whitening projection ``Z̃ = Z W`` with ``W = √n · V S⁻¹ Vᵀ``
from the SVD ``Z = U S Vᵀ`` of the batch codes, so that ``Z̃ᵀ Z̃ = n·I`` (the paper's
``Z̃ᵀZ̃ = I`` up to the factor ``n``, which keeps the scale of a row independent of the batch
size). Deviations from the original, on purpose:

- ZCA (``V S⁻¹ Vᵀ``) instead of PCA (``V S⁻¹``) whitening: both satisfy ``Z̃ᵀZ̃ ∝ I``, but the
  PCA axes' signs and order change from batch to batch, which a fixed centre ``c`` cannot follow.
  (The original's tabular layer multiplies by ``V S`` instead of ``V S⁻¹``, which does not
  orthogonalise at all; its graph variant uses ``V S⁻¹``, as the paper does.)
- In training the projection comes from each batch (as in the original); for scoring it is fixed
  to the projection of the whole training set, so a row's score never depends on the rest of the
  batch (the original recomputes it from each test batch).

Objectives (``d = ‖z̃ − c‖``, ``c`` the mean projected training code after pretraining, with
coordinates below 0.1 in magnitude pushed to ±0.1 as in Deep SVDD):

- DOHSC: the soft-boundary loss ``R² + (1/ν)·mean(max(0, d² − R²))`` with ``R = 0`` during
  training, i.e. ``(1/ν)·mean(d²)``, as the original trains (``R`` is only the ``(1 − ν)``-quantile
  of the training distances, used as the decision threshold); score ``d²``.
- DO2HSC: after a DOHSC warm-up stage, ``r_max`` and ``r_min`` are the ``1 − ν`` and ``ν``
  quantiles of the training distances and stay fixed; loss
  ``mean(max(0, d² − r_max²) + max(0, r_min² − d²))``; score ``|d − (r_min + r_max)/2|``
  (above the half-width outside the shell ``r_min ≤ d ≤ r_max``; ranks as the original's
  ``(d − r_max)(d − r_min)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import nn

from models.tabular.deep_svdd import BiasFreeMLP

INIT_STD = 0.02  # the original draws every linear weight from N(0, 0.02²)
CENTER_EPS = 0.1  # centre coordinates with |c_i| < eps are pushed to ±eps (original and Deep SVDD)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def init_normal(module: ModuleT, std: float = INIT_STD) -> ModuleT:
    """Redraw the weight of every ``nn.Linear`` in ``module`` from ``N(0, std²)``; returns it."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, std)
    return module


def hypersphere_encoder(widths: Sequence[int]) -> BiasFreeMLP:
    """The original's tabular encoder over ``widths = [d, 500, 30, 30]``: LeakyReLU after the
    first layer only, bias-free, ``N(0, 0.02²)`` weights."""
    return init_normal(BiasFreeMLP(widths, n_activations=1))


def whitening_matrix(codes: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """``W = √n · V S⁺ Vᵀ`` from the thin SVD of ``codes`` (n×k), so ``(ZW)ᵀ(ZW) = n·I``.

    ``S⁺`` inverts singular values above ``rtol · s_max`` and zeroes the rest (a batch smaller
    than ``k`` is rank deficient). Computed without gradient, as in the original (it overwrites
    the projection's weights): the SVD's backward pass is undefined for repeated singular values;
    the projection acts as a per-batch constant.
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

    def squared_distance(self, x: torch.Tensor) -> torch.Tensor:
        """``d² = ‖z̃(x) − c‖²`` per row."""
        return (self.encoder(x) - self.center).pow(2).sum(dim=1)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """``d = ‖z̃(x) − c‖`` per row."""
        return self.squared_distance(x).clamp_min(1e-12).sqrt()

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, eps: float = CENTER_EPS) -> None:
        """Fix ``W`` and ``c`` from all training rows ``x``.

        ``c`` is the mean projected code, with coordinates ``|c_i| < eps`` pushed to ``±eps``.
        """
        self.encoder.freeze_projection(x)
        was_training = self.training
        self.eval()
        center = self.encoder(x).mean(dim=0)
        small = center.abs() < eps
        center = torch.where(small, torch.where(center < 0, -eps, eps), center)
        self.center.copy_(center)
        self.train(was_training)

    @torch.no_grad()
    def set_radii(self, x: torch.Tensor) -> None:
        """``R²`` = the ``(1 − ν)``-quantile of ``d²`` over the training rows ``x``."""
        self.radius_sq.copy_(torch.quantile(self.squared_distance(x), 1.0 - self.nu))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``R² + (1/ν)·mean(max(0, d² − R²))`` with ``R = 0``: ``(1/ν)·mean(d²)``."""
        return self.squared_distance(x).mean() / self.nu

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d², NaN)``; rows with ``d² > R²`` lie outside the hypersphere.

        The score is ``d²`` rather than the original's ``d² − R²`` (same ranking): the difference
        loses relative precision near the boundary, which float32 exports would amplify.
        """
        value = self.squared_distance(x)
        return value, torch.full_like(value, float("nan"))


class DO2HSC(DOHSC):
    """Deep orthogonal bi-hypersphere compression: normal rows live in a shell."""

    def __init__(self, encoder: OrthogonalProjectionEncoder, nu: float = 0.05) -> None:
        super().__init__(encoder, nu)
        self.register_buffer("r_min", torch.zeros(()))
        self.register_buffer("r_max", torch.zeros(()))

    def dohsc_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The single-sphere loss of the warm-up stage that precedes the shell loss."""
        return super().loss(x)

    @torch.no_grad()
    def set_radii(self, x: torch.Tensor) -> None:
        """``r_max``, ``r_min`` = the ``1 − ν`` and ``ν`` quantiles of ``d`` over rows ``x``."""
        dist = self.distance(x)
        self.r_min.copy_(torch.quantile(dist, self.nu))
        self.r_max.copy_(torch.quantile(dist, 1.0 - self.nu))
        self.radius_sq.copy_(self.r_max.pow(2))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """``mean(max(0, d² − r_max²) + max(0, r_min² − d²))``."""
        dist_sq = self.squared_distance(x)
        return (torch.relu(dist_sq - self.r_max.pow(2)) + torch.relu(self.r_min.pow(2) - dist_sq)).mean()

    def mid_radius(self) -> torch.Tensor:
        """``m = (r_min + r_max)/2``."""
        return 0.5 * (self.r_min + self.r_max)

    def half_width(self) -> torch.Tensor:
        """``h = (r_max − r_min)/2``."""
        return 0.5 * (self.r_max - self.r_min)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(|d − m|, NaN)`` with ``m = (r_min + r_max)/2``, the shell's mid-radius.

        The original scores ``(d − r_max)(d − r_min) = (d − m)² − h²`` (``h`` the half-width),
        which ranks rows exactly as ``|d − m|``; rows outside the shell score above ``h``.
        ``|d − m|`` instead of a score that crosses zero at the shell (``|d − m| − h``): float32
        round-off, amplified by the whitening projection, is then small relative to the scores,
        so exported graphs match eager within the export check (measured 2.6e-4 against 1.7e-3
        for ``|d − m| − h`` on a default-size model trained on cardio).
        """
        dist = self.distance(x)
        value = (dist - self.mid_radius()).abs()
        return value, torch.full_like(value, float("nan"))
