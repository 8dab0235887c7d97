"""Every flow layer inverts exactly and reports the log|det J| of its autograd Jacobian."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from models.flows import (
    LUAffine,
    MaskedAdditiveCoupling,
    MaskedAffineCoupling,
    NonUSFlow,
    USFlow,
    make_mask,
)
from models.flows.conditioners import make_conditioner
from tests.flow_support import randomise

VECTOR = (6,)
IMAGE = (4, 3, 3)
DTYPES = [torch.float32, torch.float64]


def _layers(shape: tuple[int, ...]) -> dict[str, torch.nn.Module]:
    hidden = (8, 8)
    layers = {
        "lu": LUAffine(shape[0]),
        "lu_fixed_diag": LUAffine(shape[0], fixed_diag_magnitude=True),
        "usflow": USFlow(shape, n_blocks=3, hidden=hidden, seed=0),
        "nonusflow": NonUSFlow(shape, n_blocks=3, hidden=hidden, seed=0),
    }
    for kind in ("checkerboard", "alternating", "channel"):
        mask = make_mask(shape, kind)
        layers[f"additive_{kind}"] = MaskedAdditiveCoupling(make_conditioner(shape, hidden, 1), mask)
        layers[f"affine_{kind}"] = MaskedAffineCoupling(make_conditioner(shape, hidden, 2), mask, clamp=1.5)
    # Whole flows compose many layers: a milder perturbation keeps them well conditioned, as
    # trained flows are, so float32 round-trips stay meaningful.
    return {name: randomise(layer, 0.05 if name.endswith("flow") else 0.3) for name, layer in layers.items()}


def _inverse(layer: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
    return layer.inverse(y)


@pytest.mark.parametrize("shape", [VECTOR, IMAGE], ids=["vector", "image"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
def test_inverse_of_forward_is_identity(shape, dtype, train_mode) -> None:
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    x = torch.randn(5, *shape, dtype=dtype)
    for name, layer in _layers(shape).items():
        layer = layer.to(dtype).train(train_mode)
        y, _ = layer(x)
        assert not torch.allclose(y, x), f"{name} is still the identity: the test would prove nothing"
        restored = _inverse(layer, y)
        assert torch.allclose(restored, x, atol=tolerance, rtol=tolerance), name


@pytest.mark.parametrize("shape", [VECTOR, IMAGE], ids=["vector", "image"])
def test_log_det_matches_autograd_jacobian(shape) -> None:
    x = torch.randn(3, *shape, dtype=torch.float64)
    d = x[0].numel()
    for name, layer in _layers(shape).items():
        layer = layer.double().train()
        _, logdet = layer(x)
        for i in range(x.shape[0]):

            def single(v: torch.Tensor, layer=layer) -> torch.Tensor:
                return layer(v.view(1, *shape))[0].reshape(-1)

            jac = jacobian(single, x[i]).reshape(d, d)
            expected = torch.linalg.slogdet(jac).logabsdet
            assert torch.allclose(logdet[i], expected, atol=1e-8), (name, float(logdet[i]), float(expected))


def test_masks_are_complementary_and_valid() -> None:
    for shape in (VECTOR, IMAGE):
        for kind in ("checkerboard", "alternating", "channel"):
            even, odd = make_mask(shape, kind, 0), make_mask(shape, kind, 1)
            assert torch.equal(even + odd, torch.ones(shape))
            assert 0 < even.sum() < even.numel()
    checker = make_mask(IMAGE, "checkerboard")
    assert checker[0, 0, 0] != checker[0, 0, 1] and torch.equal(checker[0], checker[1])
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask(VECTOR, "diagonal")


def test_lu_fixed_diagonal_has_unit_determinant_and_eval_cache_is_consistent() -> None:
    layer = randomise(LUAffine(5, fixed_diag_magnitude=True)).double()
    assert "log_diag" not in dict(layer.named_parameters())
    matrix = layer.lower_matrix() @ layer.upper_matrix()
    assert torch.allclose(torch.linalg.det(matrix).abs(), torch.tensor(1.0, dtype=torch.float64))
    x = torch.randn(4, 5, 2, 2, dtype=torch.float64)
    train_out = layer.train()(x)[0]
    eval_out = layer.eval()(x)[0]
    assert torch.allclose(train_out, eval_out, atol=1e-12)
    assert layer._cached_weight is not None
    with torch.no_grad():
        layer.bias.add_(1.0)
        layer.upper.add_(0.1)
    layer.train()
    assert layer._cached_weight is None, "returning to training must drop the cached matrix"


def test_affine_clamp_bounds_the_log_scale() -> None:
    shape = (4,)
    layer = MaskedAffineCoupling(make_conditioner(shape, (8,), 2), make_mask(shape), clamp=0.5)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(50.0)
    _, logdet = layer(torch.ones(2, *shape))
    assert torch.all(logdet.abs() <= 0.5 * 2 + 1e-6)  # two transformed entries, each |s| < clamp
