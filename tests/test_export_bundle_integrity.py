"""Bundles are refused when changed after export; exports refuse bad names, runs and folders.

Every refusal goes through the real loader (``service.bundles.bundle.load_bundle``, which ``usfad
score`` and the service share) or the real ``usfad`` CLI, and must name what is wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from service.bundles.bundle import load_bundle
from service.errors import BundleError
from tests.conftest import REPO_ROOT
from tests.export_support import CardioSplit, cardio_split, single_thread, train_tiny_tabular
from training.cli import main
from training.export.manifest import sha256_file
from training.export.safety import UnsafeArtifactError, check_torchscript_archive, torchscript_pickle_globals
from training.export.writer import export_bundle
from training.runs import read_run, save_run


@pytest.fixture(scope="module")
def cardio(shared_data: Path) -> CardioSplit:
    return cardio_split(shared_data)


@pytest.fixture(scope="module")
def usflow_run(cardio: CardioSplit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with single_thread():
        return train_tiny_tabular(cardio, "usflow", tmp_path_factory.mktemp("runs") / "usflow")


@pytest.fixture(scope="module")
def pristine_bundle(usflow_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("bundles") / "cardio-usflow"
    export_bundle(usflow_run, bundle)
    return bundle


@pytest.fixture
def bundle(pristine_bundle: Path, tmp_path: Path) -> Path:
    """A fresh copy of the exported bundle that a test may damage."""
    return Path(shutil.copytree(pristine_bundle, tmp_path / pristine_bundle.name))


def _rewrite_manifest(bundle: Path, change) -> None:  # noqa: ANN001 - a small callback
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _score_cli(bundle: Path, rows_file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["score", str(bundle), "--input", str(rows_file)])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def rows_file(cardio: CardioSplit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.npz"
    np.savez(path, X=cardio.test[:20])
    return path


def test_pristine_bundle_loads_and_scores(
    bundle: Path, rows_file: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = load_bundle(bundle, device="cpu")
    assert loaded.manifest.kind == "tabular" and loaded.name == "cardio-usflow"
    code, err = _score_cli(bundle, rows_file, capsys)
    assert code == 0 and "20 inputs" in err


@pytest.mark.parametrize("file_name", ["model.onnx", "model.pt"])
def test_tampered_file_is_refused(
    file_name: str, bundle: Path, rows_file: Path, capsys: pytest.CaptureFixture
) -> None:
    data = bytearray((bundle / file_name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / file_name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"sha256 of {file_name}"):
        load_bundle(bundle, device="cpu")
    code, err = _score_cli(bundle, rows_file, capsys)
    assert code == 2 and f"sha256 of {file_name}" in err and "Traceback" not in err


def test_missing_file_is_refused(bundle: Path, rows_file: Path, capsys: pytest.CaptureFixture) -> None:
    (bundle / "model.pt").unlink()
    with pytest.raises(BundleError, match="model.pt listed in the manifest is missing"):
        load_bundle(bundle, device="cpu")
    code, err = _score_cli(bundle, rows_file, capsys)
    assert code == 2 and "model.pt" in err


def test_manifest_listing_an_unknown_file_is_refused(bundle: Path) -> None:
    # Even with a correct checksum, a file the format does not define (e.g. a pickle) is refused.
    (bundle / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    digest = sha256_file(bundle / "extra.pkl")
    _rewrite_manifest(bundle, lambda m: m["files"].__setitem__("extra.pkl", digest))
    with pytest.raises(BundleError, match="extra.pkl"):
        load_bundle(bundle, device="cpu")


def test_manifest_listing_an_absent_unknown_file_is_refused(bundle: Path) -> None:
    _rewrite_manifest(bundle, lambda m: m["files"].__setitem__("weights.bin", "0" * 64))
    with pytest.raises(BundleError, match="weights.bin"):
        load_bundle(bundle, device="cpu")


def test_loading_and_scoring_a_bundle_never_imports_torch(bundle: Path) -> None:
    script = (
        "import sys, numpy as np\n"
        "from service.bundles.bundle import load_bundle\n"
        f"b = load_bundle({str(bundle)!r}, device='cpu')\n"
        "out = b.score_tabular(np.zeros((3, b.manifest.features), dtype=np.float32))\n"
        "assert out.score.shape == (3,)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_torchscript_archive_holds_only_tensors_and_compiled_code(bundle: Path) -> None:
    names = torchscript_pickle_globals(bundle / "model.pt")
    assert "torch._utils _rebuild_tensor_v2" in names  # the scan does see the archive's pickles
    check_torchscript_archive(bundle / "model.pt")
    # An archive made with torch.save (arbitrary pickled Python objects) is refused.
    evil = bundle / "evil.pt"
    torch.save({"weights": torch.zeros(2), "note": Path("x")}, evil)
    with pytest.raises(UnsafeArtifactError, match="pathlib"):
        check_torchscript_archive(evil)


@pytest.mark.parametrize(
    ("extra_args", "out_name", "message"),
    [
        (["--name", "Bad Name"], "ok-name", "--name: name 'Bad Name'"),
        ([], "Upper_Case", "defaults to the --out folder name"),
        (["--format", "onnx,tflite"], "ok-name", "--format"),
    ],
)
def test_export_refuses_bad_names_and_formats(
    extra_args: list[str], out_name: str, message: str, usflow_run: Path, tmp_path: Path, capsys
) -> None:
    code = main(["export", str(usflow_run), "--out", str(tmp_path / out_name), *extra_args])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / out_name).exists()


def test_export_refuses_a_non_empty_folder_then_overwrites(usflow_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cardio-usflow"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", str(usflow_run), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "notes.txt").exists()
    assert main(["export", str(usflow_run), "--out", str(out), "--overwrite", "--name", "renamed"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["calibration"]["file"]
    assert sorted(p.name for p in out.iterdir()) == [calibration, "manifest.json", "model.onnx", "model.pt"]
    assert manifest["name"] == "renamed"
    assert [p.name for p in tmp_path.iterdir()] == ["cardio-usflow"]  # no staging folder left behind


def test_export_onnx_only_bundle(usflow_run: Path, tmp_path: Path) -> None:
    manifest = export_bundle(usflow_run, tmp_path / "onnx-only", formats="onnx")
    assert list(manifest["files"]) == [manifest["calibration"]["file"], "model.onnx"]
    assert load_bundle(tmp_path / "onnx-only", device="cpu").manifest.files == manifest["files"]


def test_export_refuses_sklearn_reference_and_non_runs(usflow_run: Path, tmp_path: Path, capsys) -> None:
    run = read_run(usflow_run)
    reference = save_run(tmp_path / "knn-run", torch.nn.Identity(), {**run, "family": "knn", "flow": None})
    assert main(["export", str(reference), "--out", str(tmp_path / "knn")]) == 2
    assert "scikit-learn reference" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "run.json is missing" in capsys.readouterr().err
    broken = save_run(tmp_path / "broken", torch.nn.Identity(), {**run, "input": {"names": []}})
    assert main(["export", str(broken), "--out", str(tmp_path / "y")]) == 2
    assert "input must be an object with ['features']" in capsys.readouterr().err


def _write_bad_input(kind: str, folder: Path) -> Path:
    if kind == "nan":
        rows = np.ones((4, 21), dtype=np.float32)
        rows[2, 5] = np.nan
        np.savez(folder / "nan.npz", X=rows)
        return folder / "nan.npz"
    if kind == "columns":
        (folder / "short.csv").write_text("a,b,c\n1,2,3\n")
        return folder / "short.csv"
    if kind == "text":
        (folder / "rows.txt").write_text("1 2 3\n")
        return folder / "rows.txt"
    return folder / "absent.csv"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "rows[2][5]: must be finite"),
        ("columns", "3 columns, the model expects 21 features"),
        ("text", "unsupported file type '.txt'"),
        ("absent", "file not found"),
    ],
)
def test_usfad_score_names_the_bad_input(
    kind: str, message: str, pristine_bundle: Path, tmp_path: Path, capsys
) -> None:
    code = main(["score", str(pristine_bundle), "--input", str(_write_bad_input(kind, tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "--input" in err and message in err and "Traceback" not in err


def test_export_refuses_weights_that_do_not_fit_the_config(usflow_run: Path, tmp_path: Path, capsys) -> None:
    run = read_run(usflow_run)
    wider = {**run, "config": {**run["config"], "hidden": [64, 64]}}  # weights.pt holds 32-wide layers
    mismatched = tmp_path / "mismatched"
    shutil.copytree(usflow_run, mismatched)
    (mismatched / "run.json").write_text(json.dumps(wider))
    assert main(["export", str(mismatched), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot rebuild the model from run.json + weights.pt" in err and "size mismatch" in err
