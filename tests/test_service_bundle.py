"""The bundle loader and input validation of the service (real bundles, real ONNX Runtime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.bundles.bundle import load_bundle
from service.bundles.catalog import BundleCatalog
from service.bundles.manifest import read_manifest, validate_model_name
from service.errors import BundleError, InputError
from service.inputs import validate_tabular_rows
from tests.service_support import TABULAR_MODEL, cardio_rows, model_dir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bundle_path() -> Path:
    return model_dir() / TABULAR_MODEL


@pytest.fixture(scope="module")
def bundle(bundle_path: Path):
    return load_bundle(bundle_path, device="cpu", threads=1)


@pytest.mark.parametrize("name", ["cardio", "a", "demo-tabular", "m.v2_x", "0" * 64])
def test_valid_model_names_pass(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["../etc", "..", "a/b", "a\\b", "Cardio", "", "-x", ".hidden", "a..b", "x" * 65, "a b", None, 3]
)
def test_invalid_model_names_are_refused_naming_the_field(name: object) -> None:
    with pytest.raises(InputError) as caught:
        validate_model_name(name)
    assert caught.value.field == "model" and "invalid model name" in caught.value.message


def test_loader_reads_manifest_and_uses_cpu_here(bundle) -> None:
    assert bundle.name == TABULAR_MODEL
    assert bundle.manifest.kind == "tabular" and bundle.manifest.features == 21
    assert bundle.providers == ["CPUExecutionProvider"]


def test_scores_do_not_depend_on_the_rest_of_the_batch(bundle) -> None:
    """Batching across requests is only correct if each row's score is independent of the batch."""
    _, rows = cardio_rows()
    batched = bundle.run(rows)
    singles = np.concatenate([bundle.run(rows[i : i + 1]).score for i in range(len(rows))])
    np.testing.assert_allclose(batched.score, singles, rtol=1e-5)
    assert np.isfinite(batched.nll).all() and batched.score.shape == (len(rows),)


def test_rows_as_objects_equal_rows_as_lists(bundle) -> None:
    _, rows = cardio_rows()
    names = bundle.manifest.feature_names
    as_objects = [dict(zip(names, row, strict=True)) for row in rows[:5].tolist()]
    np.testing.assert_array_equal(
        bundle.score_tabular(as_objects).score, bundle.score_tabular(rows[:5].tolist()).score
    )


@pytest.mark.parametrize(
    ("rows", "field", "words"),
    [
        ([], "rows", "empty"),
        ("1,2,3", "rows", "list of rows"),
        ([[1.0] * 20], "rows[0]", "has 20 values"),
        ([[1.0] * 21, [1.0] * 22], "rows[1]", "has 22 values"),
        ([[1.0] * 20 + [float("nan")]], "rows[0][20]", "finite"),
        ([[float("inf")] + [1.0] * 20], "rows[0][0]", "finite"),
        ([[1e39] + [1.0] * 20], "rows[0][0]", "finite in float32"),
        ([[1.0] * 5 + ["1.5"] + [1.0] * 15], "rows[0][5]", "must be a number"),
        ([[1.0] * 5 + [None] + [1.0] * 15], "rows[0][5]", "must be a number"),
        ([[True] + [1.0] * 20], "rows[0][0]", "must be a number"),
        ([42], "rows[0]", "list of 21 numbers"),
        ([{"f0": 1.0}], "rows[0]", "missing feature"),
    ],
)
def test_bad_tabular_rows_are_refused_naming_row_and_column(bundle, rows, field: str, words: str) -> None:
    with pytest.raises(InputError) as caught:
        validate_tabular_rows(rows, bundle.manifest)
    assert caught.value.field == field
    assert words in caught.value.message


def test_unknown_feature_name_is_refused(bundle) -> None:
    row = dict(zip(bundle.manifest.feature_names, [1.0] * 21, strict=True)) | {"pressure": 3.0}
    with pytest.raises(InputError, match="unknown feature"):
        validate_tabular_rows([row], bundle.manifest)


def test_tampered_model_file_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle_path, tmp_path / "tampered")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 of model.onnx"):
        load_bundle(copy, device="cpu")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m.pop("threshold"), "'threshold' is missing"),
        (lambda m: m.update(kind="audio"), "kind must be one of"),
        (lambda m: m.update(format_version=99), "format_version"),
        (lambda m: m["files"].update({"../../etc/passwd": "0" * 64}), "not a plain file name"),
        (lambda m: m["input"].update(features=0), "input.features"),
    ],
)
def test_malformed_manifest_is_refused(bundle_path: Path, tmp_path: Path, edit, words: str) -> None:
    copy = shutil.copytree(bundle_path, tmp_path / "bad")
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=words):
        load_bundle(copy, device="cpu")


def test_bundle_directory_with_invalid_name_is_refused(bundle_path: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(bundle_path, tmp_path / "Upper-Case")
    with pytest.raises(BundleError, match="invalid model name"):
        load_bundle(copy, device="cpu")


def test_registry_keeps_serving_the_old_version_when_a_new_one_is_broken(
    bundle_path: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    live = shutil.copytree(bundle_path, models / TABULAR_MODEL)
    failures: list[str] = []
    registry = BundleCatalog(
        models, device="cpu", threads=1, interval_s=0, on_failure=lambda n, e: failures.append(n)
    )
    old_version = registry.get(TABULAR_MODEL).version

    manifest = json.loads((live / "manifest.json").read_text())
    (live / "model.onnx").write_bytes((live / "model.onnx").read_bytes() + b"garbage")  # checksum now wrong
    manifest["version"] = "broken-version"
    (live / "manifest.json").write_text(json.dumps(manifest))
    assert registry.get(TABULAR_MODEL).version == old_version
    assert failures == [TABULAR_MODEL] and "sha256" in registry.failures()[TABULAR_MODEL]

    shutil.rmtree(live)
    fixed = shutil.copytree(bundle_path, live)
    manifest = json.loads((fixed / "manifest.json").read_text())
    manifest["version"] = "fixed-version"
    (fixed / "manifest.json").write_text(json.dumps(manifest))
    assert registry.get(TABULAR_MODEL).version == "fixed-version"
    assert registry.failures() == {}
    assert read_manifest(fixed).version == "fixed-version"


def test_registry_ignores_directories_with_invalid_names(bundle_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(bundle_path, models / "Not.Valid")
    shutil.copytree(bundle_path, models / "ok-model")
    assert BundleCatalog(models, device="cpu", interval_s=0).names() == ["ok-model"]
