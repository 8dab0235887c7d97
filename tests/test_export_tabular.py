"""Tabular bundles: every family exported from a real training run scores like PyTorch eager.

Parity is checked on real ADBench cardio test rows (both classes), batch sizes 1 and 7, for
eager vs the TorchScript file vs the ONNX file in ONNX Runtime (max relative difference
≤ 1e-4), and ``usfad score`` (the service's loader) must agree with eager too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.bundles.bundle import load_bundle
from tests.export_support import TINY_TABULAR, CardioSplit, cardio_split, single_thread, train_tiny_tabular
from training.cli import main
from training.export.manifest import sha256_file
from training.export.parity import SCORE_TOLERANCE, max_relative_difference
from training.export.runners import EagerRunner, OnnxRunner, TorchScriptRunner
from training.export.writer import export_bundle
from training.runs import load_scorer, read_run

FAMILIES = sorted(TINY_TABULAR)


@pytest.fixture(scope="module")
def cardio(shared_data: Path) -> CardioSplit:
    return cardio_split(shared_data)


@pytest.fixture(scope="module")
def exported(cardio: CardioSplit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``family -> (run_dir, bundle_dir)`` for every tabular family."""
    root = tmp_path_factory.mktemp("tabular-export")
    result = {}
    with single_thread():
        for family in FAMILIES:
            run_dir = train_tiny_tabular(cardio, family, root / "runs" / family)
            bundle_dir = root / "bundles" / f"cardio-{family.replace('_', '-')}"
            export_bundle(run_dir, bundle_dir)
            result[family] = (run_dir, bundle_dir)
    return result


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch", [1, 7])
def test_eager_torchscript_and_onnx_agree_on_real_rows(
    family: str, batch: int, exported: dict[str, tuple[Path, Path]], cardio: CardioSplit
) -> None:
    run_dir, bundle_dir = exported[family]
    scorer, _ = load_scorer(run_dir)
    # Rows from the middle of the test split, anomalies included.
    anomaly_rows = np.flatnonzero(cardio.test_labels == 1)[:3]
    normal_rows = np.flatnonzero(cardio.test_labels == 0)[:4]
    rows = np.ascontiguousarray(cardio.test[np.concatenate([anomaly_rows, normal_rows])[:batch]])
    eager = EagerRunner(scorer)(rows)
    assert eager[0].shape == (batch,) and np.isfinite(eager[0]).all()
    for runner in (TorchScriptRunner(bundle_dir / "model.pt"), OnnxRunner(bundle_dir / "model.onnx")):
        candidate = runner(rows)
        assert len(candidate) == 2
        for got, want in zip(candidate, eager, strict=True):
            assert max_relative_difference(got, want) <= SCORE_TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_describes_the_run(family: str, exported: dict[str, tuple[Path, Path]]) -> None:
    run_dir, bundle_dir = exported[family]
    run = read_run(run_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["name"] == bundle_dir.name
    assert manifest["kind"] == "tabular" and manifest["family"] == family and manifest["flow"] == run["flow"]
    assert manifest["input"]["features"] == 21 and len(manifest["input"]["feature_names"]) == 21
    assert manifest["input"]["dtype"] == "float32"
    assert [output["name"] for output in manifest["outputs"]] == ["score", "nll"]
    assert manifest["threshold"]["run"] == run["threshold"]  # the conformal cut replaces it (calibration)
    assert manifest["calibration"]["n"] == run["calibration"]["n"] > 0
    assert manifest["training_data"]["fingerprint"] == run["training_data"]["fingerprint"]
    assert manifest["opset"] == 18
    measured = manifest["parity"]["max_relative_difference"]
    assert set(measured) == {"onnx", "torchscript"}
    assert all(value <= SCORE_TOLERANCE for fmt in measured.values() for value in fmt.values())
    calibration = manifest["calibration"]["file"]
    assert sorted(manifest["files"]) == [calibration, "model.onnx", "model.pt"]
    written = sorted(p.name for p in bundle_dir.iterdir())
    assert written == [calibration, "manifest.json", "model.onnx", "model.pt"]
    for file_name, digest in manifest["files"].items():
        assert sha256_file(bundle_dir / file_name) == digest
    assert manifest["version"].endswith("-" + manifest["files"]["model.onnx"][:8])
    assert manifest["version"].startswith(manifest["created"].replace(":", "-"))


@pytest.mark.parametrize("family", ["usflow", "deep_svdd"])
def test_usfad_score_equals_eager_on_a_csv(
    family: str, exported: dict[str, tuple[Path, Path]], cardio: CardioSplit, tmp_path: Path
) -> None:
    run_dir, bundle_dir = exported[family]
    names = json.loads((bundle_dir / "manifest.json").read_text())["input"]["feature_names"]
    rows = cardio.test[:50]
    # Columns written in reverse order: `usfad score` must match them by name.
    csv_path = tmp_path / "rows.csv"
    lines = [",".join(reversed(names))] + [",".join(repr(float(v)) for v in reversed(row)) for row in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    assert main(["score", str(bundle_dir), "--input", str(csv_path), "--output", str(out)]) == 0
    table = np.genfromtxt(out, delimiter=",", names=True)
    scorer, _ = load_scorer(run_dir)
    eager_score, eager_nll = EagerRunner(scorer)(np.ascontiguousarray(rows))
    assert max_relative_difference(table["score"], eager_score) <= SCORE_TOLERANCE
    assert max_relative_difference(table["nll"], eager_nll) <= SCORE_TOLERANCE
    threshold = load_bundle(bundle_dir).manifest.threshold
    np.testing.assert_array_equal(table["anomalous"].astype(bool), eager_score > threshold)


def test_usfad_score_reads_adbench_npz_and_reports_auroc(
    exported: dict[str, tuple[Path, Path]], shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, bundle_dir = exported["usflow"]
    assert main(["score", str(bundle_dir), "--input", str(shared_data / "adbench/6_cardio.npz")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "id,score,nll,anomalous,label" and len(lines) == 1 + 1831
    auroc = float(captured.err.split("AUROC ")[1].split()[0])
    assert 0.5 < auroc <= 1.0  # a USFlow trained for 2 epochs already ranks cardio anomalies higher


@pytest.mark.parametrize("family", FAMILIES)
def test_extreme_rows_are_anomalies_for_every_family(
    family: str, exported: dict[str, tuple[Path, Path]]
) -> None:
    """Rows far outside the data (up to 3e38, finite in float32) through ONNX Runtime: never "normal".

    Each row either overflows (the service then answers ``score: null, reason: score_not_finite``)
    or scores above the threshold; ``service.verdict`` makes both ``is_anomaly``.
    """
    from service.verdict import is_anomaly, overflowed

    _, bundle_dir = exported[family]
    bundle = load_bundle(bundle_dir, device="cpu")
    features = bundle.manifest.features
    extreme = [[value] * features for value in (3e38, -3e38, 1e30, 1e19)]
    rows = np.array([*extreme, [3e38] + [0.0] * (features - 1)], dtype=np.float32)
    outputs = bundle.run(rows)
    flags = is_anomaly(outputs.score, bundle.manifest.threshold, overflowed(outputs.score))
    assert flags.all(), (family, outputs.score.tolist(), bundle.manifest.threshold)
