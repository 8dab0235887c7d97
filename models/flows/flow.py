"""USFlow and NonUSFlow (paper, Appendix B.1).

``φ = A_{n+1} ∘ B_n ∘ … ∘ B_1`` with blocks ``B_i = A_i⁻¹ ∘ C_i ∘ A_i``: ``A_i`` are
LU-parameterised bijective affine maps, ``C_i`` masked coupling layers. With additive
coupling every block is volume preserving, so ``log|det J_φ| = log|det A_{n+1}|`` is the same
for every input (a *uniformly scaling* flow). NonUSFlow is the identical architecture with
affine coupling, whose log-det depends on the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.flows.base import IsotropicGaussian, standard_normal_base, svdd_aligned_base
from models.flows.conditioners import make_conditioner
from models.flows.coupling import MaskedAdditiveCoupling, MaskedAffineCoupling
from models.flows.lu import LUAffine
from models.flows.masks import MaskKind, make_mask
from models.flows.prior import LogNormalDeterminantPrior


class ConjugatedCouplingBlock(nn.Module):
    """``B = A⁻¹ ∘ C ∘ A``; ``log|det J_B| = log|det J_C|`` (the LU terms cancel)."""

    def __init__(self, affine: LUAffine, coupling: nn.Module) -> None:
        super().__init__()
        self.affine = affine
        self.coupling = coupling

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # L and U are built once for both A and A⁻¹ (building them is O(d²) per call).
        factors = self.affine.factors() if self.affine.training else None
        h, _ = self.affine(x, factors)
        h, logdet = self.coupling(h)
        y, _ = self.affine.inverse_forward(h, factors)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        h, _ = self.affine(y)
        h = self.coupling.inverse(h)
        return self.affine.inverse(h)


class CouplingFlow(nn.Module):
    """Shared body of USFlow / NonUSFlow; pick the coupling with ``coupling``.

    Args:
        event_shape: ``(d,)`` for tabular rows or ``(C, H, W)`` for feature maps.
        coupling: ``"additive"`` (USF) or ``"affine"`` (non-USF).
        n_blocks: number of conjugated coupling blocks.
        hidden: widths of the conditioner's hidden layers (channels for images).
        mask: mask kind; consecutive blocks use complementary parities.
        clamp: bound on the affine log-scale (affine coupling only).
        base: ``"svdd"`` for ``N(c, ½I)`` or ``"standard"`` for ``N(0, I)``.
        center: the base centre ``c`` (``"svdd"`` only), scalar or tensor of ``event_shape``.
        fixed_inner_diag: pin ``|U_ii| = 1`` in the block LU maps (the final map keeps a
            learnable diagonal so the overall determinant stays learnable).
        prior_sigma: σ of the log-normal determinant prior, or ``None`` to switch it off.
        seed: seeds the random rotations that initialise the LU maps.
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        coupling: str = "additive",
        n_blocks: int = 4,
        hidden: Sequence[int] = (256, 256, 256, 256),
        mask: MaskKind = "alternating",
        clamp: float = 2.0,
        base: str = "svdd",
        center: float | torch.Tensor = 0.0,
        fixed_inner_diag: bool = False,
        prior_sigma: float | None = None,
        kernel_size: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if coupling not in ("additive", "affine"):
            raise ValueError(f"coupling must be 'additive' or 'affine', got {coupling!r}")
        if n_blocks < 1:
            raise ValueError("n_blocks must be at least 1")
        self.event_shape = tuple(int(s) for s in event_shape)
        self.coupling_kind = coupling
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        features = self.event_shape[0]
        blocks = []
        for index in range(n_blocks):
            mask_tensor = make_mask(self.event_shape, mask, parity=index)
            if coupling == "additive":
                layer: nn.Module = MaskedAdditiveCoupling(
                    make_conditioner(self.event_shape, hidden, 1, kernel_size), mask_tensor
                )
            else:
                layer = MaskedAffineCoupling(
                    make_conditioner(self.event_shape, hidden, 2, kernel_size), mask_tensor, clamp
                )
            affine = LUAffine(features, fixed_diag_magnitude=fixed_inner_diag, generator=generator)
            blocks.append(ConjugatedCouplingBlock(affine, layer))
        self.blocks = nn.ModuleList(blocks)
        self.final = LUAffine(features, fixed_diag_magnitude=False, generator=generator)
        if base == "svdd":
            self.base: IsotropicGaussian = svdd_aligned_base(self.event_shape, center)
        elif base == "standard":
            self.base = standard_normal_base(self.event_shape)
        else:
            raise ValueError(f"base must be 'svdd' or 'standard', got {base!r}")
        self.prior = LogNormalDeterminantPrior(prior_sigma, self.event_shape) if prior_sigma else None

    # ------------------------------------------------------------------ maps
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(φ(x), log|det J_φ(x)|)``."""
        logdet = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, block_logdet = block(x)
            logdet = logdet + block_logdet
        z, final_logdet = self.final(x)
        return z, logdet + final_logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``φ⁻¹(z)``."""
        x = self.final.inverse(z)
        for block in reversed(self.blocks):
            x = block.inverse(x)
        return x

    # ------------------------------------------------------------- densities
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``ln p̂(x) = ln p_B(φ(x)) + ln|det J_φ(x)|`` (Eq. 3)."""
        z, logdet = self(x)
        return self.base.log_prob(z) + logdet

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per sample."""
        return -self.log_prob(x)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """``φ(x)``."""
        return self(x)[0]

    def latent_norm(self, x: torch.Tensor) -> torch.Tensor:
        """``‖φ(x) - c‖``: for a USF, ranks samples exactly as the NLL does."""
        return self.base.squared_distance(self.latent(x)).sqrt()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(latent norm, NLL)`` per sample from one forward pass."""
        z, logdet = self(x)
        nll = -(self.base.log_prob(z) + logdet)
        return self.base.squared_distance(z).sqrt(), nll

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` samples through the inverse: ``φ⁻¹(z)``, ``z ~ p_B``."""
        return self.inverse(self.base.sample(n, generator))

    @property
    def uniformly_scaling(self) -> bool:
        """Whether this flow is a USF (additive coupling inside the LU conjugation)."""
        return self.coupling_kind == "additive"

    def log_abs_det_constant(self) -> torch.Tensor:
        """``ln ψ(w)``, the input-independent log-det of a USF (additive coupling only)."""
        if not self.uniformly_scaling:
            raise ValueError("only a uniformly scaling flow has a constant determinant")
        spatial = 1
        for extent in self.event_shape[1:]:
            spatial *= extent
        return self.final.log_abs_det() * spatial

    def log_prior(self) -> torch.Tensor:
        """Log-prior of the determinant (0 when the prior is switched off)."""
        if self.prior is None:
            return self.final.log_diag.new_zeros(())
        return self.prior.log_prob(self)

    def loss(self, x: torch.Tensor, n_train: int | None = None) -> torch.Tensor:
        """MAP objective: mean NLL minus the log-prior scaled by ``1/N`` of the training set."""
        value = self.nll(x).mean()
        if self.prior is not None:
            value = value - self.log_prior() / float(n_train or x.shape[0])
        return value


class USFlow(CouplingFlow):
    """Uniformly scaling flow: additive coupling, constant learnable determinant.

    Its log-determinant is the same for every input, so the latent norm ranks inputs exactly
    as the NLL does:

    >>> import torch
    >>> flow = USFlow((4,), n_blocks=2, hidden=(8,), seed=0)
    >>> x = torch.randn(6, 4)
    >>> score, nll = flow.score(x)
    >>> _, logdet = flow(x)
    >>> bool(torch.allclose(logdet, logdet[0].expand(6))), flow.uniformly_scaling
    (True, True)
    >>> bool((score.argsort() == nll.argsort()).all())
    True
    """

    def __init__(self, event_shape: Sequence[int], **kwargs) -> None:  # noqa: ANN003
        super().__init__(event_shape, coupling="additive", **kwargs)


class NonUSFlow(CouplingFlow):
    """Identical architecture with affine coupling (input-dependent determinant)."""

    def __init__(self, event_shape: Sequence[int], **kwargs) -> None:  # noqa: ANN003
        super().__init__(event_shape, coupling="affine", **kwargs)
