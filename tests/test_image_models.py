"""Every family × flow trains offline on real images and scores them; scores ignore the batch."""

from __future__ import annotations

import functools
import socket

import pytest
import torch

from tests.image_support import TINY_SIZE, tiny_images

pytestmark = pytest.mark.image

FAMILIES = ("fastflow", "cflow", "uflow")
FLOWS = ("affine", "additive", "usf")
SMALL = {
    "fastflow": {"flow_steps": 2},
    "cflow": {"coupling_blocks": 2, "fibers_per_step": 256},
    "uflow": {"flow_steps": 2},
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return tiny_images(4)


@functools.cache
def _scorer(family: str, flow: str):  # noqa: ANN202
    """One small scorer per family and flow, shared by the tests of this module."""
    from models.image.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
    from models.image.factory import build_image_detector
    from models.image.scorer import ImageScorer

    torch.manual_seed(0)
    detector = build_image_detector(family, flow, TINY_SIZE, BackboneSpec(), **SMALL[family])
    return ImageScorer(detector, IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("flow", FLOWS)
def test_trains_a_few_steps_and_maps_the_input_size(images: torch.Tensor, family: str, flow: str) -> None:
    scorer = _scorer(family, flow)
    detector = scorer.detector
    backbone_before = {k: v.clone() for k, v in detector.backbone_module().state_dict().items()}
    with torch.no_grad():
        features = detector.extract(scorer.normalize(images))
    optimizer = torch.optim.Adam(detector.head_parameters(), lr=1e-3)
    detector.train()
    losses = []
    for _ in range(2):
        loss = detector.loss(features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not detector.backbone_module().training  # the frozen backbone stays in eval mode
    for key, value in detector.backbone_module().state_dict().items():
        assert torch.equal(value, backbone_before[key]), key
    scorer.eval()
    with torch.no_grad():
        score, nll, anomaly_map = scorer(images)
    assert anomaly_map.shape == (4, 1, *TINY_SIZE)
    assert score.shape == nll.shape == (4,)
    assert torch.isfinite(score).all() and torch.isfinite(nll).all() and torch.isfinite(anomaly_map).all()
    torch.testing.assert_close(score, anomaly_map.amax(dim=(1, 2, 3)))


@pytest.mark.parametrize(
    ("family", "flow"), [("fastflow", "usf"), ("cflow", "affine"), ("cflow", "usf"), ("uflow", "usf")]
)
def test_scores_do_not_depend_on_the_rest_of_the_batch(images: torch.Tensor, family: str, flow: str) -> None:
    scorer = _scorer(family, flow).eval()
    with torch.no_grad():
        together = scorer(images)
        alone = [scorer(images[i : i + 1]) for i in range(images.shape[0])]
        shuffled = scorer(images.flip(0))
    for output, name in zip(range(3), ("score", "nll", "anomaly_map"), strict=True):
        single = torch.cat([a[output] for a in alone])
        torch.testing.assert_close(together[output], single, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(shuffled[output].flip(0), together[output], atol=1e-4, rtol=1e-4, msg=name)


def test_anomalib_cflow_map_depends_on_the_batch_but_ours_does_not(images: torch.Tensor) -> None:
    """The pitfall is real: anomalib's map normalises by the batch maximum."""
    from anomalib.models.image.cflow.anomaly_map import AnomalyMapGenerator

    generator = AnomalyMapGenerator(pool_layers=["a"])
    log_prob = torch.randn(2 * 4 * 4)
    both = generator(distribution=[log_prob], height=[4], width=[4], image_size=(8, 8))
    first = generator(distribution=[log_prob[:16]], height=[4], width=[4], image_size=(8, 8))
    assert not torch.allclose(both[:1], first)


@pytest.mark.parametrize("family", ["fastflow", "uflow"])
def test_layernorm_before_the_flow_has_no_learnable_scale(family: str) -> None:
    """The likelihood must account for every scale: our LayerNorms have no affine part."""
    scorer = _scorer(family, "usf")
    norms = [m for m in scorer.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3
    assert all(not m.elementwise_affine and not list(m.parameters()) for m in norms)
    trainable = [name for name, p in scorer.named_parameters() if p.requires_grad]
    in_flow = ("fast_flow_blocks", ".flow.", "channel_scales")  # usf: the per-channel scale after the flow
    assert trainable and all(any(part in n for part in in_flow) for n in trainable), trainable
    # anomalib's own FastFlow has a trainable LayerNorm scale, which our model removes.
    from anomalib.models.image.fastflow.torch_model import FastflowModel

    original = FastflowModel(input_size=(64, 64), backbone="resnet18", pre_trained=False, flow_steps=2)
    assert any(p.requires_grad for p in original.norms.parameters())


def test_uflow_builds_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No socket may be opened while U-Flow (and its backbone) is built."""

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    _scorer.cache_clear()  # build afresh while sockets are refused
    scorer = _scorer("uflow", "usf").eval()
    with torch.no_grad():
        _, _, anomaly_map = scorer(torch.zeros(1, *TINY_SIZE, 3, dtype=torch.uint8))
    assert anomaly_map.shape == (1, 1, *TINY_SIZE)
