"""The ``usf`` flows' per-channel scale (constant log-det) and the map → image-score head."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.image


def test_channel_scale_logdet_is_exact_and_the_same_for_every_input() -> None:
    from models.image.flow_blocks import ChannelScale

    scale = ChannelScale(3)
    with torch.no_grad():
        scale.log_scale.copy_(torch.tensor([0.5, -1.0, 0.2]))
    scale.initialized.fill_(True)
    x = torch.randn(4, 3, 2, 5)
    y, log_det = scale(x)
    torch.testing.assert_close(y, x * torch.tensor([0.5, -1.0, 0.2]).exp().view(1, 3, 1, 1))
    # One input's full Jacobian: its log|det| is what the layer reports, for every input.
    jacobian = torch.autograd.functional.jacobian(lambda v: scale(v)[0], x[:1]).reshape(30, 30)
    assert float(torch.linalg.slogdet(jacobian).logabsdet) == pytest.approx(float(log_det[0]), abs=1e-5)
    assert float(log_det[0]) == pytest.approx(10 * (0.5 - 1.0 + 0.2), abs=1e-6)
    assert torch.equal(log_det, log_det[0].expand(4))
    _, fibres_log_det = scale(torch.randn(7, 3))  # (N, C) fibres, as CFlow uses
    assert float(fibres_log_det[0]) == pytest.approx(-0.3, abs=1e-6)


def test_channel_scale_starts_at_the_features_scale_in_training_only() -> None:
    from models.image.flow_blocks import ChannelScale

    x = torch.randn(8, 2, 4, 4) * torch.tensor([3.0, 0.1]).view(1, 2, 1, 1)
    scale = ChannelScale(2).eval()
    y, _ = scale(x)
    assert torch.equal(y, x) and not bool(scale.initialized)  # eval never initialises
    y, _ = scale.train()(x)
    assert bool(scale.initialized)
    torch.testing.assert_close(y.pow(2).mean(dim=(0, 2, 3)), torch.ones(2))  # unit second moment
    before = scale.log_scale.detach().clone()
    scale(x * 5)  # later batches do not re-initialise
    assert torch.equal(scale.log_scale.detach(), before)


def test_usf_detectors_end_in_a_channel_scale_and_affine_ones_do_not() -> None:
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector as build_detector

    spec = BackboneSpec(weights="random-init")
    assert build_detector("fastflow", "usf", (64, 64), spec, flow_steps=2).channel_scales is not None
    assert build_detector("fastflow", "affine", (64, 64), spec, flow_steps=2).channel_scales is None
    off = build_detector("uflow", "usf", (64, 64), spec, flow_steps=2, channel_scale=False)
    assert off.channel_scales is None


def test_map_score_is_the_max_or_the_top_k_mean_of_the_smoothed_map() -> None:
    from models.image.map_score import MapScore

    anomaly_map = torch.rand(3, 1, 40, 50)
    smoothed, score = MapScore((40, 50))(anomaly_map)
    assert torch.equal(smoothed, anomaly_map)
    torch.testing.assert_close(score, anomaly_map.amax(dim=(1, 2, 3)))
    _, top = MapScore((40, 50), top_fraction=0.01)(anomaly_map)
    k = 20  # 1 % of 2000 pixels
    expected = anomaly_map.flatten(1).sort(dim=1, descending=True).values[:, :k].mean(dim=1)
    torch.testing.assert_close(top, expected)
    # σ = 4: a single hot pixel spreads into a normalised Gaussian (the map's mass is kept); the
    # score is taken from the raw map.
    spike = torch.zeros(1, 1, 40, 50)
    spike[0, 0, 20, 25] = 1.0
    blurred, peak = MapScore((40, 50), sigma=4.0)(spike)
    assert float(blurred.sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(blurred.max()) == pytest.approx(1 / (2 * math.pi * 16), rel=0.05)
    assert float(peak[0]) == 1.0
    with pytest.raises(ValueError, match="score_top_fraction"):
        MapScore((40, 50), top_fraction=2.0)
