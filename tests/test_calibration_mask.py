"""``map=mask`` at a controlled rate (docs/calibration.md): the family-wise rate on the demo bundle.

The demo image model (FastFlow-USF, trained by ``train_demo_image_run`` as ``usfad serve --demo``
trains it) scores the top-1 % mean of its raw map and returns a σ = 4 smoothed map, so the
image score is *not* the returned map's maximum. Checked through real HTTP (``usfad serve``,
uvicorn, ONNX Runtime) and the real ``usfad calibrate``:

- the ONNX graph returns the smoothed map and the raw map's score as separate outputs;
- the map maxima stored by training are the maxima of the maps the service returns for the
  very calibration images (float tolerance);
- a bundle without stored maxima (exported before them) still loads, refuses ``map=mask`` at a
  rate with a 422, cuts at a raw ``threshold``, and gains the maxima with ``usfad calibrate``;
- after ``usfad calibrate`` on 499 fresh good images the cut changes, and on 1000 other fresh
  good images the share with *any* masked pixel lies in the 99 % beta-binomial interval of the
  requested rate (test sampling and the calibration draw, what split conformal promises).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import betabinom

from service.bundles.bundle import load_bundle
from service.calibration import calibration_file, map_cut, min_fpr, score_cut
from tests.service_support import REPO_ROOT, wait_until

pytestmark = [pytest.mark.image, pytest.mark.timeout(600)]

MODEL = "demo-image"
OLD_MODEL = "demo-image-old"
N_CALIBRATE = 499  # certifies 1/(n+1) = 0.2 %
N_HELD_OUT = 1000
BATCH = 32


@dataclass
class Demo:
    url: str
    run_dir: Path
    models: Path
    calibrate_dir: Path
    held_out: list[Path]
    data_root: Path


def _strip_map_maxima(bundle_dir: Path) -> None:
    """Rewrite a bundle as ``usfad export`` wrote it before the maxima existed (scores only)."""
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    section = manifest["calibration"]
    old_file = bundle_dir / section["file"]
    scores = np.asarray(json.loads(old_file.read_text())["scores"], dtype=np.float64)
    name, data = calibration_file(scores)
    (bundle_dir / name).write_bytes(data)
    old_file.unlink()
    files = {k: v for k, v in manifest["files"].items() if k != section["file"]}
    manifest["files"] = dict(sorted({**files, name: hashlib.sha256(data).hexdigest()}.items()))
    section["file"] = name
    del section["mask"]
    manifest["name"] = bundle_dir.name
    manifest_path.write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def demo(serve_embedded, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    from training.export.writer import export_bundle
    from training.image.demo import train_demo_image_run, write_demo_goods

    root = tmp_path_factory.mktemp("mask")
    torch.set_num_threads(1)
    run_dir = train_demo_image_run(root / "runs" / MODEL, data_root=root / "data")
    models = root / "bundles"
    export_bundle(run_dir, models / MODEL, ("onnx",), MODEL)
    export_bundle(run_dir, models / OLD_MODEL, ("onnx",), OLD_MODEL)
    _strip_map_maxima(models / OLD_MODEL)
    calibrate_dir = root / "calibrate"
    write_demo_goods(calibrate_dir, N_CALIBRATE, seed=1)
    held_out = write_demo_goods(root / "held-out", N_HELD_OUT, seed=2)

    url, _ = serve_embedded(models, USFAD_MAX_DELAY_MS="2", USFAD_RELOAD_INTERVAL_S="0.2")
    return Demo(url, run_dir, models, calibrate_dir, held_out, root / "data")


def _post(url: str, paths: list[Path], model: str = MODEL, **params: object) -> httpx.Response:
    files = [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]
    return httpx.post(f"{url}/score/image", params={"model": model, **params}, files=files, timeout=120)


def _calibrate(bundle_dir: Path, data: list[Path], timeout_s: float) -> None:
    """``usfad calibrate BUNDLE_DIR --data ...`` in place, as a user runs it; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "calibrate", str(bundle_dir), "--data", *map(str, data)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr


def _results(url: str, paths: list[Path], **params: object) -> list[dict]:
    results: list[dict] = []
    for start in range(0, len(paths), BATCH):
        response = _post(url, paths[start : start + BATCH], **params)
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def _calibration_images(demo: Demo) -> list[Path]:
    """The run's held-out calibration images, as training listed them."""
    document = json.loads((demo.run_dir / "calibration.json").read_text())
    return [demo.data_root / "demo_parts" / name for name in document["images"]]


def test_the_graph_returns_the_smoothed_map_and_the_raw_maps_score(demo: Demo) -> None:
    from training.runs import load_scorer

    scorer, _ = load_scorer(demo.run_dir)
    detector = scorer.detector
    assert detector.map_score.sigma > 0 and detector.map_score.top_k > 1  # the CPU default
    paths = _calibration_images(demo)
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    with torch.no_grad():
        latents, _ = detector.latents(detector.extract(scorer.normalize(torch.from_numpy(images))))
        raw = detector.raw_anomaly_map(latents)
        smoothed = detector.map_score.blur(raw).numpy()[:, 0]
        top_mean = raw.flatten(1).topk(detector.map_score.top_k, dim=1).values.mean(dim=1).numpy()
    outputs = load_bundle(demo.models / MODEL, device="cpu", threads=1).score_images(images)
    np.testing.assert_allclose(outputs.anomaly_map, smoothed, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs.score, top_mean, rtol=1e-4, atol=1e-5)
    # Two statistics: the score is not the returned map's maximum.
    assert np.abs(outputs.anomaly_map.reshape(len(paths), -1).max(axis=1) - outputs.score).min() > 1e-3


def test_stored_map_maxima_are_the_maxima_of_the_served_maps(demo: Demo) -> None:
    bundle = load_bundle(demo.models / MODEL, device="cpu", threads=1)
    section = bundle.manifest.calibration
    assert section["mask"]["statistic"] == "anomaly_map_max" and bundle.map_max.size == section["n"] == 7
    paths = _calibration_images(demo)
    assert len(paths) == section["n"]
    results = _results(demo.url, paths, map="array", fpr=min_fpr(7))
    served_max = sorted(float(np.max(r["anomaly_map"]["values"])) for r in results)
    np.testing.assert_allclose(served_max, bundle.map_max, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sorted(r["score"] for r in results), bundle.calibration, rtol=1e-5, atol=1e-5)
    # At the default rate the mask is cut from the maxima, not at the manifest's score threshold.
    masked = _post(demo.url, paths[:2], map="mask").json()
    assert masked["fpr"] == section["default_fpr"]
    default = section["default_fpr"]
    for result in masked["results"]:
        assert result["anomaly_map"]["cut"] == pytest.approx(map_cut(bundle.map_max, default))
        assert result["anomaly_map"]["cut"] != pytest.approx(score_cut(bundle.calibration, default))


def test_a_bundle_without_maxima_loads_refuses_a_mask_rate_and_gains_it_by_calibrate(demo: Demo) -> None:
    listed = httpx.get(f"{demo.url}/models").json()
    assert OLD_MODEL in {model["name"] for model in listed["models"]} and listed["refused"] == {}
    paths = _calibration_images(demo)[:2]
    for params in ({}, {"fpr": 0.5}):
        refused = _post(demo.url, paths, model=OLD_MODEL, map="mask", **params)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["field"] == "map" and "usfad calibrate" in error["message"]
    assert _post(demo.url, paths, model=OLD_MODEL, map="png").status_code == 200  # maps and verdicts
    raw = _post(demo.url, paths, model=OLD_MODEL, map="mask", threshold=-0.5)  # a raw cut, no rate
    assert raw.status_code == 200 and raw.json()["results"][0]["anomaly_map"]["cut"] == -0.5

    before = json.loads((demo.models / OLD_MODEL / "manifest.json").read_text())["version"]
    _calibrate(demo.models / OLD_MODEL, sorted(demo.calibrate_dir.glob("*.png"))[:19], timeout_s=240)
    bundle = load_bundle(demo.models / OLD_MODEL, device="cpu", threads=1)
    assert bundle.map_max is not None and bundle.map_max.size == 19 and bundle.version != before
    wait_until(lambda: _post(demo.url, paths, model=OLD_MODEL, map="mask").status_code == 200, 20, "reload")


def test_the_mask_rate_on_held_out_good_images_after_recalibration(demo: Demo) -> None:
    """Runs last: recalibrates the served bundle in place on 499 fresh good images."""
    paths = _calibration_images(demo)[:1]
    fpr = min_fpr(7)  # certifiable before (n = 7) and after
    old_cut = _post(demo.url, paths, map="mask", fpr=fpr).json()["results"][0]["anomaly_map"]["cut"]
    _calibrate(demo.models / MODEL, [demo.calibrate_dir], timeout_s=300)
    bundle = load_bundle(demo.models / MODEL, device="cpu", threads=1)
    assert bundle.manifest.calibration["n"] == bundle.map_max.size == N_CALIBRATE
    wait_until(lambda: _post(demo.url, paths).json()["version"] == bundle.version, 20, "recalibrated version")
    new_cut = _post(demo.url, paths, map="mask", fpr=fpr).json()["results"][0]["anomaly_map"]["cut"]
    assert new_cut == pytest.approx(map_cut(bundle.map_max, fpr)) and new_cut != pytest.approx(old_cut)

    # usfad calibrate stored the maxima of the maps the service returns for those images.
    sample = sorted(demo.calibrate_dir.glob("*.png"))[:BATCH]
    served = np.array([np.max(r["anomaly_map"]["values"]) for r in _results(demo.url, sample, map="array")])
    nearest = np.abs(served[:, None] - bundle.map_max[None, :]).min(axis=1)
    assert nearest.max() <= 1e-5 * np.abs(served).max()

    for rate in (0.05, 0.1):
        results = _results(demo.url, demo.held_out, map="mask", fpr=rate)
        flagged = sum(r["anomaly_map"]["defect_pixels"] > 0 for r in results)
        # The conditional rate of one calibration draw is Beta(k, n + 1 - k), k = floor(rate (n + 1)).
        k = math.floor(rate * (N_CALIBRATE + 1))
        law = betabinom(N_HELD_OUT, k, N_CALIBRATE + 1 - k)
        print(f"map=mask at fpr {rate:g}: {flagged} of {N_HELD_OUT} held-out good images with a masked pixel")
        assert law.ppf(0.005) <= flagged <= law.ppf(0.995), (rate, flagged / N_HELD_OUT)
        for result in results:  # the mask is the map above the cut, at the image's own size
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["anomaly_map"]["png_base64"]))))
            assert pixels.shape == (result["height"], result["width"])
            assert int((pixels > 0).sum()) == result["anomaly_map"]["defect_pixels"]
