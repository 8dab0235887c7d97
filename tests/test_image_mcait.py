"""U-Flow's MS-CaiT backbone (``--backbone mcait``): built offline, 448×448 only, weights from disk.

The 448×448 test builds the real CaiT-M48 (356 M parameters, ~1.4 GB) once with random weights
and runs one image through it: about 30 s on one loaded CPU core, ~2 GB of memory.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.image


def test_mcait_needs_a_weight_source_and_448_input(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from models.image.backbone import BackboneSpec
    from models.image.factory import build_image_detector
    from training.cli import main
    from training.image.train import resolve_settings

    with pytest.raises(ValueError, match="MS-CaiT has no offline weights; pass --backbone-weights"):
        build_image_detector("uflow", "usf", (448, 448), BackboneSpec("mcait", "offline"))
    with pytest.raises(ValueError, match="needs 448x448 input, got 256x448"):
        build_image_detector("uflow", "usf", (256, 448), BackboneSpec("mcait", "random-init"))
    with pytest.raises(ValueError, match="U-Flow's transformer backbone"):
        build_image_detector("fastflow", "usf", (448, 448), BackboneSpec("mcait", "random-init"))
    assert resolve_settings("uflow", "cpu", {"backbone": "mcait"}).input_size == (448, 448)
    with pytest.raises(ValueError, match="MS-CaiT is U-Flow's backbone"):
        resolve_settings("cflow", "cpu", {"backbone": "mcait"})

    args = ["train", "image", "--data", str(tmp_path), "--model", "uflow", "--flow", "usf"]
    assert main([*args, "--out", str(tmp_path / "run"), "--backbone", "mcait"]) == 2
    error = capsys.readouterr().err
    assert "MS-CaiT has no offline weights" in error and "--random-init" in error


def test_random_init_uflow_mcait_builds_offline_and_maps_448(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.image.backbone import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
    from models.image.factory import build_image_detector
    from models.image.scorer import ImageScorer

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    backbone_spec = BackboneSpec("mcait", "random-init")
    detector = build_image_detector("uflow", "usf", (448, 448), backbone_spec, flow_steps=2)
    assert [type(m).__name__ for m in detector.backbone_module().children()] == ["Cait", "Cait"]
    backbone = {id(p) for p in detector.backbone_module().parameters()}
    assert not any(p.requires_grad for p in detector.backbone_module().parameters())
    assert detector.head_parameters() and not backbone & {id(p) for p in detector.head_parameters()}

    scorer = ImageScorer(detector, IMAGENET_MEAN, IMAGENET_STD).eval()
    image = torch.randint(0, 256, (1, 448, 448, 3), dtype=torch.uint8)
    with torch.no_grad():
        features = detector.extract(scorer.normalize(image))
        score, nll, anomaly_map = detector.predict(features)
    assert [tuple(f.shape) for f in features] == [(1, 784, 768), (1, 196, 384)]  # 28², 14² tokens
    assert anomaly_map.shape == (1, 1, 448, 448)
    assert torch.isfinite(anomaly_map).all() and torch.isfinite(score).all() and torch.isfinite(nll).all()


def test_weights_load_from_a_folder_or_one_file(tmp_path: Path) -> None:
    """The weight paths, exercised with the small CaiT-S24 part.

    Saving a CaiT-M48 checkpoint (356 M parameters, ~1.4 GB) and building a second M48 to load it
    would add ~1.4 GB of disk, ~3 GB of memory and ~20 s; the M48 part goes through the same
    ``checkpoint_in_folder`` / ``load_state_file`` / ``load_matching`` calls as the S24 part below,
    and a folder lacking it must fail before the large model is built.
    """
    import timm
    from safetensors.torch import save_file

    from models.image.backbone import BackboneSpec, checkpoint_in_folder, load_matching, load_state_file
    from models.image.mcait import OfflineMCaitFeatureExtractor

    torch.manual_seed(1)
    saved = timm.create_model("cait_s24_224", pretrained=False).eval()
    probe = torch.randn(1, 3, 224, 224)
    for suffix in (".pth", ".safetensors"):
        folder = tmp_path / suffix.strip(".")
        folder.mkdir()
        path = folder / f"cait_s24_224{suffix}"
        if suffix == ".pth":
            torch.save(saved.state_dict(), path)
        else:
            save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, str(path))
        loaded = timm.create_model("cait_s24_224", pretrained=False).eval()
        load_matching(loaded, load_state_file(checkpoint_in_folder(folder, "cait_s24_224")))
        with torch.no_grad():
            torch.testing.assert_close(loaded.forward_features(probe), saved.forward_features(probe))
        with pytest.raises(FileNotFoundError, match=f"no checkpoint for cait_m48_448 in {folder}"):
            OfflineMCaitFeatureExtractor(BackboneSpec("mcait", str(folder)))

    single = tmp_path / "mcait.pth"
    torch.save({"cait_s24_224": saved.state_dict()}, single)
    with pytest.raises(KeyError, match="missing cait_m48_448"):
        OfflineMCaitFeatureExtractor(BackboneSpec("mcait", str(single)))
