"""Calibrated verdicts (docs/calibration.md): conformal p-values, fpr / fdr, calibrate, drift gauges.

The math (``service.calibration``) is checked on exact cases and by simulation; the validity of
the p-values on a really fitted flow; the bundle's calibration file and its checksum; the
service's ``fpr`` / ``fdr`` / 422 answers through real HTTP (``usfad serve``, uvicorn, ONNX
Runtime); and ``usfad calibrate`` on a served bundle, picked up without a restart.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from service.bundles.bundle import load_bundle
from service.calibration import (
    CalibrationError,
    benjamini_hochberg,
    calibration_file,
    certifiable,
    flag_at_fpr,
    map_cut,
    map_maxima,
    p_values,
    read_calibration_file,
    read_map_maxima,
    required_n,
    score_cut,
    sorted_scores,
)
from service.errors import BundleError
from tests.conftest import CARDIO_FILE, data_path
from tests.service_support import (
    IMAGE_MODEL,
    REPO_ROOT,
    TABULAR_MODEL,
    cardio_rows,
    copy_model_dir,
    metric_value,
    tile_images,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)


# -- the math ---------------------------------------------------------------------------------
def test_p_value_formula_and_non_finite_scores_are_most_extreme() -> None:
    calibration = sorted_scores([3.0, 1.0, 4.0, 2.0])
    p = p_values(calibration, [0.0, 2.0, 2.5, 5.0, np.nan, np.inf, -np.inf])
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 3 / 5, 1 / 5, 1 / 5, 1 / 5, 1 / 5])
    with pytest.raises(ValueError, match="not finite"):
        sorted_scores([1.0, np.nan])


def test_score_cut_is_the_same_verdict_as_p_at_most_fpr() -> None:
    rng = np.random.default_rng(1)
    for n in (1, 7, 99, 100, 250):
        calibration = sorted_scores(rng.normal(size=n).round(2))  # ties included
        scores = rng.normal(size=2000).round(2)
        p = p_values(calibration, scores)
        for fpr in (1 / (n + 1), 0.01, 0.05, 0.2, 0.5):
            if not certifiable(fpr, n):
                with pytest.raises(ValueError, match="below 1/"):
                    score_cut(calibration, fpr)
                continue
            np.testing.assert_array_equal(flag_at_fpr(p, fpr), scores > score_cut(calibration, fpr))


def test_map_maxima_are_stored_next_to_the_scores_and_cut_like_them() -> None:
    scores, maxima = sorted_scores([1.0, 2.0, 3.0]), sorted_scores([0.5, 0.7, 0.9])
    name, data = calibration_file(scores, maxima)
    assert name != calibration_file(scores)[0]  # the maxima are part of the checksummed content
    np.testing.assert_array_equal(read_calibration_file(data, 3), scores)
    np.testing.assert_array_equal(read_map_maxima(data, 3), maxima)
    assert map_cut(maxima, 0.5) == score_cut(maxima, 0.5) == 0.7  # p <= 0.5: at most one maximum at or above
    with pytest.raises(CalibrationError, match="no valid 'map_max'"):
        read_map_maxima(calibration_file(scores)[1], 3)  # a file written before the maxima existed
    with pytest.raises(CalibrationError, match="sorted"):
        read_map_maxima(json.dumps({"n": 3, "scores": [1, 2, 3], "map_max": [3, 2, 1]}).encode(), 3)
    with pytest.raises(CalibrationError, match="map maxima"):
        calibration_file(scores, maxima[:2])
    maps = np.arange(24, dtype=np.float32).reshape(2, 1, 3, 4)
    maps[1, 0, 0, 0] = np.nan
    np.testing.assert_array_equal(map_maxima(maps), [11.0, np.nan])


def test_smallest_certifiable_rate_and_the_n_it_needs() -> None:
    assert required_n(0.001) == 999 and certifiable(0.001, 999) and not certifiable(0.001, 998)
    assert required_n(0.01) == 99 and certifiable(0.01, 99) and not certifiable(0.01, 98)


def test_benjamini_hochberg_controls_the_fdr_on_planted_anomalies() -> None:
    """200 simulated batches of 200 inputs, 20 planted anomalies: mean FDP ≤ q, power well above 0."""
    rng = np.random.default_rng(2)
    q = 0.1
    fdp, power, naive_fdp = [], [], []
    for _ in range(200):
        calibration = sorted_scores(rng.normal(size=500))
        planted = np.zeros(200, dtype=bool)
        planted[:20] = True
        scores = rng.normal(size=200) + 3.5 * planted
        p = p_values(calibration, scores)
        rejected = benjamini_hochberg(p, q)
        fdp.append((rejected & ~planted).sum() / max(1, rejected.sum()))
        power.append((rejected & planted).sum() / planted.sum())
        naive = p <= q  # per-input rate, no correction: many false discoveries
        naive_fdp.append((naive & ~planted).sum() / max(1, naive.sum()))
    assert np.mean(fdp) <= q * 180 / 200 + 0.02
    assert np.mean(power) > 0.5
    assert np.mean(naive_fdp) > 2 * q  # the check above could fail: uncorrected flags break it
    assert benjamini_hochberg([0.01, 0.02, 0.9], 0.05).tolist() == [True, True, False]
    assert benjamini_hochberg([], 0.05).size == 0


def test_p_values_of_a_fitted_flow_are_uniform_on_normal_data(tmp_path: Path) -> None:
    """A USFlow fitted on synthetic Gaussian rows; p-values of fresh normal rows against held-out
    calibration rows (n = 99, a fresh draw per trial) are uniform: KS test against U(0, 1)."""
    import torch

    from training.runs import read_run
    from training.tabular.run import load_tabular_scorer
    from training.tabular.train import train_tabular_run

    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(4, 4))
    draw = lambda count: rng.normal(size=(count, 4)) @ mixing + 1.0  # noqa: E731
    run_dir = train_tabular_run(
        draw(1500), "usflow", tmp_path / "run", overrides={"n_blocks": 2, "hidden": [32, 32], "epochs": 5}
    )
    scorer = load_tabular_scorer(run_dir, read_run(run_dir))
    with torch.inference_mode():
        pool = scorer(torch.from_numpy(draw(20_000).astype(np.float32)))[0].numpy().astype(np.float64)
    trials = []
    for _ in range(600):
        chosen = rng.choice(pool.size, size=100, replace=False)
        trials.append(p_values(sorted_scores(pool[chosen[:99]]), pool[chosen[99:]])[0])
    assert stats.kstest(trials, "uniform").pvalue > 0.01
    assert abs(np.mean(np.asarray(trials) <= 0.05) - 0.05) < 0.03
    # In-sample scores are *not* a valid calibration: training rows score lower than fresh rows.
    assert read_run(run_dir)["calibration"]["n"] == 150


# -- bundles ----------------------------------------------------------------------------------
def test_every_exported_bundle_carries_its_calibration_checksummed(tmp_path: Path) -> None:
    from scipy.stats import chi2

    models = copy_model_dir(tmp_path / "bundles")
    bundle = load_bundle(models / TABULAR_MODEL)
    section = bundle.manifest.calibration
    assert section is not None and section["n"] == 30 == bundle.calibration.size  # 10 % of 300 rows
    assert section["file"] in bundle.manifest.files and section["data"]["rows"] == 30
    assert section["data"]["fingerprint"].startswith("sha256:")
    assert section["default_fpr"] == pytest.approx(1 / 31)  # 1 % needs n >= 99: the smallest rate
    assert section["analytic"]["dof"] == 21 and section["analytic"]["scale"] == 2.0
    assert 0 <= section["analytic"]["ks_distance"] <= 1
    _, test = cardio_rows()
    scores = bundle.score_tabular(test).score.astype(np.float64)
    arrays = bundle.p_values(scores)
    brute = [(1 + np.sum(bundle.calibration >= s)) / 31 for s in scores]
    np.testing.assert_allclose(arrays["p_value"], brute)
    np.testing.assert_allclose(arrays["p_value_analytic"], chi2.sf(2 * scores**2, 21))
    # The manifest threshold is the cut at the default rate: usfad score and the service agree.
    at_default = arrays["p_value"] <= section["default_fpr"]
    np.testing.assert_array_equal(scores > bundle.manifest.threshold, at_default)
    image = load_bundle(models / IMAGE_MODEL)
    assert image.manifest.calibration["n"] == image.calibration.size == 2
    assert "p_value_analytic" not in image.p_values(np.zeros(3))

    calibration_file = models / TABULAR_MODEL / section["file"]
    calibration_file.write_bytes(calibration_file.read_bytes().replace(b"[", b"[0.0,", 1))
    with pytest.raises(BundleError, match=f"sha256 of {section['file']}"):
        load_bundle(models / TABULAR_MODEL)
    manifest_path = models / IMAGE_MODEL / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "calibration"}))
    with pytest.raises(BundleError, match="no calibration"):
        load_bundle(models / IMAGE_MODEL)


# -- the service, through real HTTP -----------------------------------------------------------
@pytest.fixture(scope="module")
def served(serve_embedded, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    models = copy_model_dir(tmp_path_factory.mktemp("calibration-models") / "bundles")
    url, _ = serve_embedded(models, USFAD_MAX_DELAY_MS="2", USFAD_RELOAD_INTERVAL_S="0.2")
    return url, models


def _tabular(url: str, **fields) -> httpx.Response:
    _, test = cardio_rows()
    return httpx.post(f"{url}/score/tabular", json={"model": TABULAR_MODEL, "rows": test.tolist(), **fields})


def test_fpr_fdr_and_uncertifiable_rates_through_http(served: tuple[str, Path]) -> None:
    url, models = served
    bundle = load_bundle(models / TABULAR_MODEL)
    section = bundle.manifest.calibration
    answered: list[float] = []

    body = _tabular(url).json()  # default: the model's default fpr
    p = np.array([r["p_value"] for r in body["results"]])
    scores = np.array([r["score"] for r in body["results"]])
    answered += p.tolist()
    np.testing.assert_allclose(p, bundle.p_values(scores)["p_value"])
    assert body["fpr"] == section["default_fpr"] and body["calibration_n"] == 30 and body["fdr"] is None
    assert [r["is_anomaly"] for r in body["results"]] == (p <= body["fpr"]).tolist()
    assert body["threshold"] == bundle.manifest.threshold
    assert all(r["p_value_analytic"] is not None for r in body["results"])

    body = _tabular(url, fpr=0.25).json()
    answered += [r["p_value"] for r in body["results"]]
    assert body["fpr"] == 0.25 and body["threshold"] is None
    assert [r["is_anomaly"] for r in body["results"]] == (p <= 0.25).tolist()

    body = _tabular(url, fdr=0.1).json()
    answered += [r["p_value"] for r in body["results"]]
    assert body["fdr"] == 0.1 and body["fpr"] is None
    assert [r["is_anomaly"] for r in body["results"]] == benjamini_hochberg(p, 0.1).tolist()

    body = _tabular(url, threshold=1e9).json()  # raw-score override keeps working
    answered += [r["p_value"] for r in body["results"]]
    assert body["threshold"] == 1e9 and not any(r["is_anomaly"] for r in body["results"])

    refused = _tabular(url, fpr=0.001)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["field"] == "fpr" and "n = 30" in error["message"] and "n >= 999" in error["message"]
    for fields, field in (({"fpr": 0.1, "fdr": 0.1}, "fdr"), ({"threshold": 1.0, "fpr": 0.1}, "fpr")):
        response = _tabular(url, **fields)
        assert response.status_code == 422 and response.json()["error"]["field"] == field
        assert "mutually exclusive" in response.json()["error"]["message"]
    assert _tabular(url, fdr=1.5).json()["error"]["field"] == "fdr"

    recent = np.asarray(answered[-1000:])
    text = httpx.get(f"{url}/metrics").text
    for level in ("0.01", "0.05"):
        gauge = metric_value(text, "usfad_p_value_share", model=TABULAR_MODEL, level=level)
        assert gauge == pytest.approx(np.mean(recent <= float(level)))


def test_image_verdicts_at_a_false_alarm_rate(served: tuple[str, Path]) -> None:
    url, _ = served
    files = [("images", (path.name, path.read_bytes(), "image/jpeg")) for path in tile_images(4)]
    params = {"model": IMAGE_MODEL, "map": "none"}
    body = httpx.post(f"{url}/score/image", params={**params, "fpr": 0.5}, files=files).json()
    assert body["calibration_n"] == 2 and body["fpr"] == 0.5
    for result in body["results"]:
        assert min(abs(result["p_value"] - level) for level in (1 / 3, 2 / 3, 1.0)) < 1e-12
        assert result["is_anomaly"] == (result["p_value"] <= 0.5) and result["p_value_analytic"] is None
    refused = httpx.post(f"{url}/score/image", params={**params, "fpr": 0.1}, files=files)
    assert refused.status_code == 422 and "n >= 9" in refused.json()["error"]["message"]
    fdr = httpx.post(f"{url}/score/image", params=params, data={"fdr": "0.5"}, files=files).json()
    p = [r["p_value"] for r in fdr["results"]]
    assert [r["is_anomaly"] for r in fdr["results"]] == benjamini_hochberg(p, 0.5).tolist()

    # map=mask: defect pixels above the calibration map maxima's cut at the verdict's fpr.
    calibration = load_bundle(served[1] / IMAGE_MODEL)
    assert calibration.map_max is not None and calibration.map_max.size == 2
    for fields, fpr in (({"fpr": 0.5}, 0.5), ({}, calibration.manifest.calibration["default_fpr"])):
        masked = httpx.post(f"{url}/score/image", params={**params, "map": "mask", **fields}, files=files)
        assert masked.status_code == 200, masked.text
        for result, path in zip(masked.json()["results"], tile_images(4), strict=True):
            mask = result["anomaly_map"]
            assert mask["format"] == "mask"
            assert mask["cut"] == pytest.approx(map_cut(calibration.map_max, fpr))
            pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png_base64"]))))
            assert pixels.shape == np.asarray(Image.open(path)).shape[:2]
            assert int((pixels > 0).sum()) == mask["defect_pixels"]
    refused = httpx.post(f"{url}/score/image", params={**params, "map": "mask", "fdr": 0.5}, files=files)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "map"


def test_usfad_calibrate_on_a_served_bundle_is_picked_up_without_restart(served: tuple[str, Path]) -> None:
    """Runs last: recalibrates the served tabular bundle in place on all normal cardio rows."""
    url, models = served
    cardio = data_path(CARDIO_FILE)
    old = _tabular(url).json()
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "calibrate", str(models / TABULAR_MODEL)]
        + ["--data", str(cardio)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((models / TABULAR_MODEL / "manifest.json").read_text())
    with np.load(cardio) as data:
        normal = int((data["y"] == 0).sum())
    section = manifest["calibration"]
    assert section["n"] == normal == section["data"]["rows"] and manifest["version"] != old["version"]
    assert section["data"]["source"] == str(cardio) and section["data"]["fingerprint"].startswith("sha256:")
    assert section["analytic"]["dof"] == 21 and manifest["recalibrated_from"] == old["version"]
    assert [p.name for p in (models / TABULAR_MODEL).glob("calibration-*.json")] == [section["file"]]
    wait_until(lambda: _tabular(url).json()["version"] == manifest["version"], 20, "recalibrated version")
    body = _tabular(url, fpr=0.001).json()  # certifiable now: n >= 999
    assert body["calibration_n"] == normal and body["fpr"] == 0.001
    refreshed = load_bundle(models / TABULAR_MODEL)
    scores = np.array([r["score"] for r in body["results"]])
    np.testing.assert_allclose([r["p_value"] for r in body["results"]], refreshed.p_values(scores)["p_value"])
    assert httpx.get(f"{url}/models").json()["refused"] == {}


def test_fpr_and_fdr_take_the_fast_path_and_agree_with_pydantic() -> None:
    from fastapi.exceptions import RequestValidationError

    from service.schemas import TabularRequest
    from service.tabular_request import _plain_call, parse_tabular_request

    body = {"model": "m", "rows": [[1.0]], "fpr": 0.01, "fdr": None, "threshold": None}
    call = _plain_call(body)
    checked = TabularRequest.model_validate({**body, "rows": []})
    assert call is not None and (call.fpr, call.fdr) == (checked.fpr, checked.fdr) == (0.01, None)
    assert parse_tabular_request(b'{"model": "m", "rows": [[1]], "fdr": 0.2}').fdr == 0.2
    with pytest.raises(RequestValidationError) as refused:
        parse_tabular_request(b'{"model": "m", "rows": [[1]], "fpr": "low"}')
    assert refused.value.errors()[0]["loc"][-1] == "fpr"
