"""FrEIA-compatible coupling blocks for anomalib's flows: ``affine``, ``additive`` and ``usf``.

- ``affine``: anomalib's ``AllInOneBlock`` (affine coupling, learnable global affine scale,
  fixed channel permutation), the baseline.
- ``additive``: :class:`AdditiveCouplingBlock`, ``y₂ = x₂ + t(x₁, c)`` followed by a fixed
  channel permutation; ``log|det J| = 0``.
- ``usf``: :class:`USFCouplingBlock`, ``P ∘ A⁻¹ ∘ C ∘ A`` with ``A`` an LU-parameterised 1×1 map whose
  diagonal magnitudes are fixed to 1 (``models.flows.LUAffine``) and ``C`` the additive coupling;
  ``log|det J| = 0`` for every input, and no learnable global scale anywhere.

Blocks take FrEIA's ``(dims_in, dims_c, subnet_constructor)`` and return
``((y,), log|det J|)``, so ``SequenceINN`` and ``GraphINN`` accept them. Channels are axis 1 of
``(N, C)`` vectors (CFlow) or ``(N, C, H, W)`` maps (FastFlow, U-Flow).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from FrEIA.modules import InvertibleModule
from torch import nn

from models.families import IMAGE_FLOW_KINDS
from models.flows.lu import LUAffine

FLOW_KINDS = IMAGE_FLOW_KINDS
SubnetConstructor = Callable[[int, int], nn.Module]


def _zero_last_layer(subnet: nn.Module) -> None:
    """Zero the last layer with weights, so the coupling starts as the identity map."""
    last = None
    for module in subnet.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = module
    if last is not None:
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)


def _broadcast_conditions(conditions: Iterable[torch.Tensor], like: torch.Tensor) -> list[torch.Tensor]:
    return [
        c if c.dim() == like.dim() else c.view(*c.shape, *([1] * (like.dim() - c.dim()))) for c in conditions
    ]


class AdditiveCoupling(nn.Module):
    """``y = [x₁, x₂ + t([x₁, c])]`` over the channel axis; volume preserving."""

    def __init__(self, channels: int, cond_channels: int, subnet_constructor: SubnetConstructor) -> None:
        super().__init__()
        self.split = (channels // 2, channels - channels // 2)
        self.subnet = subnet_constructor(self.split[0] + cond_channels, self.split[1])
        _zero_last_layer(self.subnet)

    def _shift(self, kept: torch.Tensor, conditions: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.subnet(torch.cat([kept, *_broadcast_conditions(conditions, kept)], dim=1))

    def forward(self, x: torch.Tensor, conditions: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        kept, moved = x.split(self.split, dim=1)
        return torch.cat([kept, moved + self._shift(kept, conditions)], dim=1)

    def inverse(self, y: torch.Tensor, conditions: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        kept, moved = y.split(self.split, dim=1)
        return torch.cat([kept, moved - self._shift(kept, conditions)], dim=1)


class AdditiveCouplingBlock(InvertibleModule):
    """Additive coupling then a fixed random channel permutation (``log|det J| = 0``)."""

    def __init__(
        self,
        dims_in: list[tuple[int, ...]],
        dims_c: list[tuple[int, ...]] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
    ) -> None:
        super().__init__(dims_in, dims_c)
        if subnet_constructor is None:
            raise ValueError("subnet_constructor is required")
        channels = self.dims_in[0][0]
        self.coupling = AdditiveCoupling(channels, sum(d[0] for d in self.dims_c), subnet_constructor)
        permutation = torch.randperm(channels)
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def forward(
        self,
        x_or_z: Sequence[torch.Tensor],
        c: Sequence[torch.Tensor] = (),
        rev: bool = False,
        jac: bool = True,
    ) -> tuple[tuple[torch.Tensor], torch.Tensor]:
        x, c = x_or_z[0], c or ()
        if not rev:
            y = self._couple(x, c)[:, self.permutation]
        else:
            y = self._uncouple(x[:, self.inverse_permutation], c)
        return (y,), x.new_zeros(x.shape[0])

    def _couple(self, x: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.coupling(x, c)

    def _uncouple(self, y: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.coupling.inverse(y, c)

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


class USFCouplingBlock(AdditiveCouplingBlock):
    """``B = P ∘ A⁻¹ ∘ C ∘ A``: additive coupling ``C`` in a learned basis ``A = L U`` with ``|U_ii| = 1``.

    ``P`` is a fixed random channel permutation (as in anomalib's blocks) and
    ``log|det J_B| = 0 + (-log|det A|) + 0 + log|det A| = 0`` for every input.

    ``A`` starts at the identity (``L = U = I``, ``LUAffine``'s initialisation with fixed
    diagonal magnitudes), so the block starts as the additive block.
    """

    def __init__(
        self,
        dims_in: list[tuple[int, ...]],
        dims_c: list[tuple[int, ...]] | None = None,
        subnet_constructor: SubnetConstructor | None = None,
    ) -> None:
        super().__init__(dims_in, dims_c, subnet_constructor)
        # Starts at the identity (fixed diagonal magnitudes), so the block starts additive.
        self.affine = LUAffine(self.dims_in[0][0], fixed_diag_magnitude=True)

    def _couple(self, x: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
        factors = self.affine.factors() if self.affine.training else None  # shared by A and A⁻¹
        h, _ = self.affine(x, factors)
        return self.affine.inverse(self.coupling(h, c), factors)

    def _uncouple(self, y: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
        h, _ = self.affine(y)
        return self.affine.inverse(self.coupling.inverse(h, c))


class ChannelScale(nn.Module):
    """``z' = exp(s) ⊙ z`` with one learnable log-scale ``s_c`` per channel, the same at every position.

    ``log|det J| = H·W · Σ_c s_c`` for a ``C×H×W`` map (``Σ_c s_c`` for ``(N, C)`` fibres): a
    constant, so a flow ending in it is still uniformly scaling (the paper's Eq. 4 asks only
    ``det J = κ``, not ``det J = 1``). It lets a volume-preserving flow match the scale of its
    features, which ``det = 1`` forbids. ``s`` is initialised from the first training batch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, z: torch.Tensor) -> None:
        """Glow's ActNorm data-dependent init: ``s_c = −½ log mean(z_c²)`` on the first training batch.

        Plain gradient steps move ``s`` by about the learning rate per step, so a scale that
        starts at 1 would need hundreds of epochs to reach the features' (LayerNorm-ed, per
        channel very uneven) scale; this starts it at the maximum-likelihood value for the
        identity flow.
        """
        second_moment = z.transpose(0, 1).flatten(1).pow(2).mean(dim=1).clamp_min(1e-12)
        self.log_scale.copy_(-0.5 * second_moment.log())
        self.initialized.fill_(True)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(exp(s) ⊙ z, log|det J|)`` with the log-det repeated per row of ``z``."""
        if self.training and not bool(self.initialized):
            self._initialize(z)
        shape = (1, -1) + (1,) * (z.dim() - 2)
        positions = z[0, 0].numel()
        log_det = self.log_scale.sum() * positions
        return z * self.log_scale.exp().view(shape), log_det.expand(z.shape[0])


def uses_channel_scale(flow: str, channel_scale: bool | None) -> bool:
    """Whether a detector ends its flow in a :class:`ChannelScale` (default: ``usf`` flows only)."""
    return flow == "usf" if channel_scale is None else bool(channel_scale)


def block_for(flow: str, affine_args: dict[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    """``(block class, extra constructor kwargs)`` for a flow kind.

    ``affine_args`` are the arguments anomalib passes to ``AllInOneBlock`` (clamping, global
    affine type, permutation); the USF blocks take none of them (no scale to clamp).
    """
    if flow == "affine":
        from anomalib.models.components.flow import AllInOneBlock

        return AllInOneBlock, dict(affine_args)
    if flow == "additive":
        return AdditiveCouplingBlock, {}
    if flow == "usf":
        return USFCouplingBlock, {}
    raise ValueError(f"flow must be one of {FLOW_KINDS}, got {flow!r}")


def lu_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of every LU map in ``module`` (they get their own, smaller learning rate)."""
    return [p for layer in module.modules() if isinstance(layer, LUAffine) for p in layer.parameters()]
