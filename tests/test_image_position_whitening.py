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


@pytest.mark.parametrize("family", ["cflow", "uflow"])
def test_cflow_and_uflow_whitening_adds_a_constant_log_det_and_is_fitted_by_initialise(family: str) -> None:
    """The whitening's log-det enters the likelihood, is the same for every image, and fit changes it."""
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector

    torch.manual_seed(0)
    spec = BackboneSpec(weights="random-init")
    args = {"coupling_blocks": 2} if family == "cflow" else {"flow_steps": 2}
    detector = build_image_detector(
        family,
        "usf",
        (64, 64),
        spec,
        out_indices=(2, 3),
        position_whitening=True,
        channel_scale=False,
        **args,
    ).eval()
    train = detector.extract(torch.randn(40, 3, 64, 64) * 2)
    test = detector.extract(torch.randn(3, 3, 64, 64))
    before = detector.predict(test)[1]
    detector.initialise(train)
    assert all(float(w.log_det) != 0.0 for w in detector.whitenings)
    after = detector.predict(test)[1]
    assert torch.isfinite(after).all() and not torch.allclose(before, after)
    if family == "uflow":
        _, log_jacobian = detector.latents(test)
        assert torch.allclose(log_jacobian, log_jacobian[0].expand_as(log_jacobian))
    else:  # CFlow's per-fibre log-det: the whitening adds log det W_p at each position p
        fibres, _, position_log_det = detector._fibres(0, test[0])
        expected = detector.whitenings[0].position_log_det.flatten().repeat(3)
        torch.testing.assert_close(position_log_det, expected)
        assert fibres.shape[0] == position_log_det.shape[0]


def test_latent_nll_map_is_the_mean_over_scales_of_half_the_mean_squared_latent() -> None:
    from models.image.map_score import latent_nll_map

    fine, coarse = torch.full((2, 4, 8, 8), 2.0), torch.zeros(2, 6, 4, 4)
    coarse[1] = 4.0
    anomaly_map = latent_nll_map([fine, coarse], (16, 16))
    assert anomaly_map.shape == (2, 1, 16, 16)
    torch.testing.assert_close(anomaly_map[0], torch.full((1, 16, 16), 1.0))  # (½·4 + 0) / 2
    torch.testing.assert_close(anomaly_map[1], torch.full((1, 16, 16), 5.0))  # (½·4 + ½·16) / 2


def test_fastflow_latent_nll_map_is_what_predict_returns_and_unknown_kinds_are_refused() -> None:
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector
    from models.image.map_score import latent_nll_map

    spec = BackboneSpec(weights="random-init")
    with pytest.raises(ValueError, match="map_kind"):
        build_image_detector("fastflow", "usf", (64, 64), spec, flow_steps=2, map_kind="nll")
    detector = build_image_detector(
        "fastflow", "usf", (64, 64), spec, flow_steps=2, map_kind="latent_nll", score_top_fraction=0.01
    ).eval()
    features = detector.extract(torch.randn(2, 3, 64, 64))
    score, _, anomaly_map = detector.predict(features)
    expected = latent_nll_map(detector.latents(features)[0], (64, 64))
    torch.testing.assert_close(anomaly_map, expected)
    torch.testing.assert_close(score, expected.flatten(1).topk(41, dim=1).values.mean(dim=1))
