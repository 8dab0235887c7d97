"""Image bundles: FastFlow, CFlow and U-Flow runs exported from real training runs.

Parity on real Magnetic Tile test images (good and defective), batch sizes 1 and 7: PyTorch
eager vs TorchScript vs ONNX Runtime, max relative difference ≤ 1e-4 on score / nll and
≤ 1e-3 on the N×1×H×W anomaly maps; ``usfad score`` on the image files (the service's
decoding and resizing) equals eager on the images as training loads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.export_support import IMAGE_SIZE, single_thread, tile_test_images, train_tiny_image
from training.cli import main
from training.export.parity import MAP_TOLERANCE, SCORE_TOLERANCE, max_relative_difference
from training.export.runners import EagerRunner, OnnxRunner, TorchScriptRunner
from training.export.writer import export_bundle
from training.image.data import load_images
from training.runs import load_scorer

pytestmark = pytest.mark.image

# Every family, both kinds of flow block (USF: LU-conjugated additive coupling; affine: anomalib's).
VARIANTS = [("fastflow", "usf"), ("cflow", "usf"), ("uflow", "affine")]


@pytest.fixture(scope="module")
def exported(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple]:
    """``(family, flow) -> (run_dir, bundle_dir)``."""
    root = tmp_path_factory.mktemp("image-export")
    result = {}
    with single_thread():
        for family, flow in VARIANTS:
            run_dir = train_tiny_image(shared_data, family, flow, root / "runs" / f"{family}-{flow}")
            bundle_dir = root / "bundles" / f"tile-{family}-{flow}"
            export_bundle(run_dir, bundle_dir)
            result[(family, flow)] = (run_dir, bundle_dir)
    return result


@pytest.fixture(scope="module")
def tiles(shared_data: Path) -> list[Path]:
    return tile_test_images(shared_data, 7)


@pytest.mark.parametrize(("family", "flow"), VARIANTS, ids=[f"{f}-{k}" for f, k in VARIANTS])
def test_eager_torchscript_and_onnx_agree_on_real_tiles(
    family: str, flow: str, exported: dict, tiles: list[Path]
) -> None:
    run_dir, bundle_dir = exported[(family, flow)]
    scorer, _ = load_scorer(run_dir)
    images = load_images(tiles, IMAGE_SIZE).numpy()
    runners = [TorchScriptRunner(bundle_dir / "model.pt"), OnnxRunner(bundle_dir / "model.onnx")]
    first_image: dict[int, list[np.ndarray]] = {}
    for batch in (1, 7):
        inputs = np.ascontiguousarray(images[:batch])
        eager = EagerRunner(scorer)(inputs)
        assert eager[2].shape == (batch, 1, *IMAGE_SIZE) and np.isfinite(eager[0]).all()
        for runner in runners:
            score, nll, anomaly_map = runner(inputs)
            assert max_relative_difference(score, eager[0]) <= SCORE_TOLERANCE
            assert max_relative_difference(nll, eager[1]) <= SCORE_TOLERANCE
            assert max_relative_difference(anomaly_map, eager[2]) <= MAP_TOLERANCE
        first_image[batch] = [output[:1] for output in runners[1](inputs)]
    # In the ONNX graph an image's results do not depend on the rest of the batch.
    for alone, in_batch in zip(first_image[1], first_image[7], strict=True):
        assert max_relative_difference(alone, in_batch) <= SCORE_TOLERANCE


def test_image_manifest(exported: dict) -> None:
    run_dir, bundle_dir = exported[("fastflow", "usf")]
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["kind"] == "image" and manifest["family"] == "fastflow" and manifest["flow"] == "usf"
    assert manifest["input"] == {
        "name": "input",
        "dtype": "uint8",
        "layout": "NHWC",
        "height": 64,
        "width": 64,
        "channels": 3,
        "color_mode": "rgb",
        "resize": "bilinear",
    }
    assert manifest["outputs"][2] == {"name": "anomaly_map", "shape": ["N", 1, 64, 64]}
    run = json.loads((run_dir / "run.json").read_text())
    assert manifest["threshold"]["run"] == run["threshold"] and manifest["metrics"] == run["metrics"]
    assert manifest["calibration"]["n"] == run["training_data"]["calibration_rows"] > 0


def test_usfad_score_on_image_files_equals_eager(exported: dict, tiles: list[Path], tmp_path: Path) -> None:
    run_dir, bundle_dir = exported[("uflow", "affine")]
    out, maps = tmp_path / "scores.csv", tmp_path / "maps.npz"
    args = [
        "score",
        str(bundle_dir),
        "--input",
        *map(str, tiles[:5]),
        "--output",
        str(out),
        "--maps-out",
        str(maps),
    ]
    assert main(args) == 0
    table = np.genfromtxt(out, delimiter=",", names=True, dtype=None, encoding="utf-8")
    assert [Path(p) for p in table["id"]] == tiles[:5]
    scorer, _ = load_scorer(run_dir)
    score, nll, anomaly_map = EagerRunner(scorer)(load_images(tiles[:5], IMAGE_SIZE).numpy())
    assert max_relative_difference(table["score"], score) <= SCORE_TOLERANCE
    assert max_relative_difference(table["nll"], nll) <= SCORE_TOLERANCE
    saved = np.load(maps)["anomaly_map"]
    assert max_relative_difference(saved, anomaly_map[:, 0]) <= MAP_TOLERANCE
    assert max_relative_difference(table["map_max"], anomaly_map.reshape(5, -1).max(axis=1)) <= MAP_TOLERANCE
