"""The per-position Gaussian whitening layer: PaDiM's Mahalanobis distance as a flow's first layer."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.image


def _correlated_features(n: int = 64, channels: int = 3, height: int = 2, width: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    mixing = torch.randn(height, width, channels, channels)
    offset = torch.randn(channels, height, width) * 3
    noise = torch.randn(height, width, channels, n)
    return (mixing @ noise).permute(3, 2, 0, 1) + offset  # [N, C, H, W], a Gaussian per position


def test_whitening_gives_unit_covariance_per_position_and_the_mahalanobis_distance() -> None:
    from models.image.position_gaussian import PositionWhitening

    features = _correlated_features()
    layer = PositionWhitening(3, 2, 3, shrinkage=1e-6)
    layer.fit(features)
    whitened, _ = layer(features)
    per_position = whitened.permute(2, 3, 1, 0)  # [H, W, C, N]
    covariance = per_position @ per_position.transpose(-1, -2) / (features.shape[0] - 1)
    torch.testing.assert_close(covariance, torch.eye(3).expand_as(covariance), atol=1e-3, rtol=0)
    torch.testing.assert_close(per_position.mean(-1), torch.zeros(2, 3, 3), atol=1e-4, rtol=0)
    # ‖y_p‖² is the squared Mahalanobis distance under the fitted (μ_p, Σ_p), as PaDiM scores.
    sample = torch.randn(1, 3, 2, 3)
    y, _ = layer(sample)
    for h in range(2):
        for w in range(3):
            column = features[:, :, h, w].double()
            sigma = torch.cov(column.T) + 1e-6 * torch.eye(3, dtype=torch.float64)
            delta = sample[0, :, h, w].double() - column.mean(0)
            mahalanobis = delta @ torch.linalg.solve(sigma, delta)
            assert float(y[0, :, h, w].pow(2).sum()) == pytest.approx(float(mahalanobis), rel=1e-3)


def test_whitening_log_det_matches_autograd_and_is_the_same_for_every_input() -> None:
    from models.image.position_gaussian import PositionWhitening

    layer = PositionWhitening(3, 2, 3)
    layer.fit(_correlated_features())
    x = torch.randn(5, 3, 2, 3) * 4
    _, log_det = layer(x)
    assert torch.equal(log_det, log_det[0].expand(5))
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x[:1]).reshape(18, 18)
    assert float(torch.linalg.slogdet(jacobian).logabsdet) == pytest.approx(float(log_det[0]), abs=1e-4)


def test_whitening_refuses_features_of_the_wrong_shape_and_a_zero_shrinkage() -> None:
    from models.image.position_gaussian import PositionWhitening

    with pytest.raises(ValueError, match="shrinkage"):
        PositionWhitening(3, 2, 3, shrinkage=0.0)
    with pytest.raises(ValueError, match="features must be"):
        PositionWhitening(3, 2, 3).fit(torch.randn(4, 3, 3, 3))


def test_fastflow_usf_with_whitening_starts_as_padim_and_stays_uniformly_scaling() -> None:
    """Before its couplings train, FastFlow-usf with whitening scores each position by PaDiM's distance."""
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector

    torch.manual_seed(0)
    detector = build_image_detector(
        "fastflow",
        "usf",
        (64, 64),
        BackboneSpec(weights="random-init"),
        flow_steps=2,
        out_indices=(2, 3),
        position_whitening=True,
        channel_scale=False,
    ).eval()
    train = detector.extract(torch.randn(40, 3, 64, 64))
    detector.initialise(train)
    test = detector.extract(torch.randn(3, 3, 64, 64))
    latents, log_jacobian = detector.latents(test)
    for norm, whitening, feature, z in zip(detector.norms, detector.whitenings, test, latents, strict=True):
        expected, _ = whitening(norm(feature))
        # usf couplings start at the identity; the fixed channel permutations keep each norm.
        torch.testing.assert_close(z.pow(2).sum(1), expected.pow(2).sum(1), atol=1e-3, rtol=1e-4)
    total = sum(log_jacobian) if isinstance(log_jacobian, list) else log_jacobian
    assert torch.allclose(total, total[0].expand_as(total))
