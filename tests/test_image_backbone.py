"""The offline EfficientNet-Lite0 weights, mapped onto timm, are the real ImageNet model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

pytestmark = pytest.mark.image

# ImageNet classes a photo of a Chinese temple may plausibly be given.
TEMPLE_CLASSES = {
    "church",
    "bell cote",
    "palace",
    "dome",
    "stupa",
    "monastery",
    "pagoda",
    "boathouse",
    "mosque",
}


def _photo(name: str) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    from models.image.backbone import IMAGENET_MEAN, IMAGENET_STD

    image = torch.tensor(load_sample_image(name)).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False)
    return (image - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )


@pytest.fixture(scope="module")
def classifiers() -> tuple[torch.nn.Module, torch.nn.Module]:
    from models.image.backbone import BackboneSpec, create_classifier

    torch.manual_seed(0)
    return create_classifier(BackboneSpec()), create_classifier(BackboneSpec(weights="random-init"))


def test_every_checkpoint_key_maps_onto_timm() -> None:
    import timm

    from models.image.backbone import offline_checkpoint_path, offline_lite0_state_dict

    raw = torch.load(offline_checkpoint_path(), map_location="cpu", weights_only=True)
    mapped = offline_lite0_state_dict()
    expected = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert len(mapped) == len(raw) == len(expected)
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


def test_offline_weights_classify_a_real_photo(classifiers) -> None:
    from timm.data import ImageNetInfo

    pretrained, random_init = classifiers
    info = ImageNetInfo()
    with torch.no_grad():
        probs = pretrained(_photo("china.jpg")).softmax(-1)[0]
        random_probs = random_init(_photo("china.jpg")).softmax(-1)[0]
    top5 = [info.index_to_description(int(i)).split(",")[0] for i in probs.topk(5).indices]
    assert TEMPLE_CLASSES & set(top5), top5
    assert float(probs.max()) > 0.2  # a confident prediction
    assert float(random_probs.max()) < 0.05  # random init is near uniform


def test_offline_features_are_not_random(classifiers) -> None:
    """Pretrained features tell two different photos apart far better than random features."""
    pretrained, random_init = classifiers

    def similarity(model: torch.nn.Module) -> float:
        with torch.no_grad():
            a = model.forward_head(model.forward_features(_photo("china.jpg")), pre_logits=True)
            b = model.forward_head(model.forward_features(_photo("flower.jpg")), pre_logits=True)
        return float(F.cosine_similarity(a, b).squeeze())

    assert similarity(pretrained) < 0.8
    assert similarity(random_init) > similarity(pretrained)


def test_backbones_without_offline_weights_need_an_explicit_source() -> None:
    from models.image.backbone import BackboneSpec, create_feature_extractor

    with pytest.raises(ValueError, match="no offline weights"):
        create_feature_extractor(BackboneSpec("resnet18", "offline"), (1, 2, 3))
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        create_feature_extractor(BackboneSpec("resnet18", "/nonexistent/resnet18.pth"), (1, 2, 3))
    assert BackboneSpec("resnet18", "random-init").describe() == "resnet18 (random-init)"
