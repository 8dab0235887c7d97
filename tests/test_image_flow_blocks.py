"""The additive and USF blocks: constant (zero) log-determinant, exact inverse, FrEIA-compatible."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.image


def _conv_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, c_out, 3, padding=1))


def _fc_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, 16), nn.ReLU(), nn.Linear(16, c_out))


def _perturb(module: nn.Module) -> None:
    """Move every parameter away from its (identity) initialisation."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))


def _sequence(flow: str, dims: tuple[int, ...], cond: int | None = None) -> nn.Module:
    from FrEIA.framework import SequenceINN

    from models.image.flow_blocks import block_for

    block, args = block_for(flow, {"affine_clamping": 2.0, "permute_soft": False})
    inn = SequenceINN(*dims)
    subnet = _conv_subnet if len(dims) == 3 else _fc_subnet
    for _ in range(3):
        if cond is None:
            inn.append(block, subnet_constructor=subnet, **args)
        else:
            inn.append(block, cond=0, cond_shape=(cond,), subnet_constructor=subnet, **args)
    _perturb(inn)
    return inn


@pytest.mark.parametrize("flow", ["additive", "usf"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_uniformly_scaling_blocks_have_zero_logdet_and_invert_on_maps(flow: str, mode: str) -> None:
    inn = _sequence(flow, (6, 5, 7)).double().train(mode == "train")
    x = torch.randn(4, 6, 5, 7, dtype=torch.float64) * 3
    z, logdet = inn(x)
    assert torch.equal(logdet, torch.zeros(4, dtype=torch.float64))
    assert (z - x).abs().max() > 1e-2  # the flow is not the identity
    x_back, logdet_back = inn(z, rev=True)
    torch.testing.assert_close(x_back, x)
    assert torch.equal(logdet_back, torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("flow", ["additive", "usf"])
def test_conditional_blocks_invert_and_their_true_jacobian_determinant_is_one(flow: str) -> None:
    inn = _sequence(flow, (5,), cond=3).double()
    condition = torch.randn(1, 3, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(1, 5, dtype=torch.float64) * 2
        jacobian = torch.autograd.functional.jacobian(lambda v: inn(v, [condition])[0], x).reshape(5, 5)
        assert float(torch.linalg.det(jacobian).abs()) == pytest.approx(1.0, abs=1e-8)
        z, _ = inn(x, [condition])
        x_back, _ = inn(z, [condition], rev=True)
        torch.testing.assert_close(x_back, x)


def test_affine_baseline_logdet_depends_on_the_input() -> None:
    inn = _sequence("affine", (6, 5, 7))
    _, logdet = inn(torch.randn(4, 6, 5, 7) * 3)
    assert logdet.std() > 1e-3


def test_usf_blocks_hold_no_learnable_scale() -> None:
    from models.flows.lu import LUAffine

    inn = _sequence("usf", (6, 5, 7))
    lu_layers = [m for m in inn.modules() if isinstance(m, LUAffine)]
    assert len(lu_layers) == 3
    assert all(not isinstance(layer.log_diag, nn.Parameter) for layer in lu_layers)
    assert all(torch.equal(layer.log_diag, torch.zeros(6)) for layer in lu_layers)
    assert not any("scale" in name for name, _ in inn.named_parameters())
    affine_names = [name for name, _ in _sequence("affine", (6, 5, 7)).named_parameters()]
    assert any("global_scale" in name for name in affine_names)  # the baseline does have one


def test_lu_factors_are_applied_in_training_and_cached_for_eval() -> None:
    from models.flows.lu import LUAffine

    inn = _sequence("usf", (6, 5, 7))
    layer = next(m for m in inn.modules() if isinstance(m, LUAffine))
    x = torch.randn(2, 6, 5, 7)
    inn.train()
    z_train, _ = inn(x)
    assert layer._cached_weight is None
    inn.eval()
    z_eval, _ = inn(x)
    assert layer._cached_weight is not None
    torch.testing.assert_close(z_eval, z_train, atol=1e-4, rtol=1e-4)


def test_usf_block_starts_well_conditioned_and_as_the_identity() -> None:
    """LU maps start at the identity (a random rotation rescaled to |U_ii| = 1 is ill-conditioned)."""
    from FrEIA.framework import SequenceINN

    from models.flows.lu import LUAffine
    from models.image.flow_blocks import USFCouplingBlock

    inn = SequenceINN(320)
    inn.append(USFCouplingBlock, subnet_constructor=_fc_subnet)
    layer = next(m for m in inn.modules() if isinstance(m, LUAffine))
    assert float(torch.linalg.cond(layer.eval().weight())) == pytest.approx(1.0)
    x = torch.randn(3, 320)
    z, _ = inn(x)
    torch.testing.assert_close(z, x[:, inn.module_list[0].permutation])


def test_lu_factors_get_their_own_smaller_learning_rate() -> None:
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector
    from models.image.flow_blocks import lu_parameters
    from training.image.train import _parameter_groups, resolve_settings

    backbone = BackboneSpec(weights="random-init")
    detector = build_image_detector("fastflow", "usf", (64, 64), backbone, flow_steps=2)
    settings = resolve_settings("fastflow", "cpu", {})
    head, lu = _parameter_groups(detector, settings)
    assert "lr" not in head and lu["lr"] == pytest.approx(settings.lr * settings.lu_lr_scale)
    assert {id(p) for p in lu["params"]} == {id(p) for p in lu_parameters(detector)}
    assert len(lu["params"]) == 3 * 2 * 3  # (lower, upper, bias) x 2 blocks x 3 scales
