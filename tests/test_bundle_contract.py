"""The bundle contract is written once (``service.contract``): the writer and the loader agree.

Property tests (hypothesis) over runs the exporter may meet: whatever ``build_manifest``
writes, ``service.bundles.manifest.read_manifest`` loads from disk; whatever the loader refuses, the
writer refuses too. No torch: the manifest code is torch-free.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.bundles.manifest import Manifest, read_manifest, validate_model_name
from service.contract import RunRecord, check_manifest, is_valid_name
from service.errors import BundleError, ContractError, InputError
from training.export.manifest import build_manifest, validate_name

DIGEST = "ab" * 32
CREATED = "2026-12-01T21:00:00Z"
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strategies lean towards valid values, so that many examples get past the writer.
valid_names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
names = st.one_of(
    st.text(alphabet="abz09._-A/ \\", max_size=70),
    st.from_regex(r"[a-z0-9][a-z0-9._-]{0,66}", fullmatch=True),
    valid_names,
    st.sampled_from(["cardio..v2", "..", ".", "a", "a" * 64, "a" * 65, "cardio-usflow"]),
)
feature_names = st.lists(st.sampled_from(["a", "b", "c", "dup", "x y", ""]), max_size=5)
tabular_inputs = st.fixed_dictionaries(
    {"features": st.integers(-1, 5)}, optional={"feature_names": st.one_of(st.none(), feature_names)}
)
image_inputs = st.fixed_dictionaries(
    {
        "height": st.integers(-1, 64),
        "width": st.integers(-1, 64),
        "channels": st.sampled_from([1, 3, 3, 4]),
        "color_mode": st.sampled_from(["rgb", "rgb", "grayscale", "cmyk"]),
    }
)
scores = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 10),
    st.integers(-5, 5),
    st.none(),
    st.text(max_size=3),
)
valid_files = st.sampled_from([{"model.onnx": DIGEST}, {"model.onnx": DIGEST, "model.pt": DIGEST}])
files = st.dictionaries(
    st.sampled_from(["model.onnx", "model.onnx", "model.pt", "extra.pkl", "../model.onnx"]),
    st.sampled_from([DIGEST, DIGEST, DIGEST, "0" * 63, "XYZ"]),
    min_size=1,
).filter(lambda listed: "model.onnx" in listed or "model.pt" in listed)


@st.composite
def clean_inputs(draw: st.DrawFn, kind: str) -> dict:
    """An input entry the contract accepts."""
    if kind == "tabular":
        names = draw(st.lists(st.sampled_from("abcde"), min_size=1, max_size=5, unique=True))
        return {"features": len(names), "feature_names": draw(st.sampled_from([names, None]))}
    mode = draw(st.sampled_from(["rgb", "grayscale"]))
    side = st.integers(1, 64)
    channels = 3 if mode == "rgb" else 1
    return {"height": draw(side), "width": draw(side), "channels": channels, "color_mode": mode}


@st.composite
def runs(draw: st.DrawFn) -> dict:
    """Runs, half of them clean (every part valid), half with parts drawn from the messy strategies."""
    kind = draw(st.sampled_from(["tabular", "image"]))
    clean = draw(st.booleans())
    messy_input = tabular_inputs if kind == "tabular" else image_inputs
    record = RunRecord(
        kind=kind,
        family=draw(st.sampled_from(["usflow", "fastflow"])),
        flow=draw(st.sampled_from([None, "usf"])),
        config={},
        input=draw(clean_inputs(kind) if clean else messy_input),
        threshold={"score": draw(st.floats(-10, 10) if clean else scores), "method": "test"},
    )
    return record.to_json()


def _writer(run: dict, name: str, listed: dict[str, str]) -> dict | None:
    """The manifest the exporter writes, or ``None`` when it refuses."""
    try:
        return build_manifest(run, name, listed, CREATED, 18)
    except (ContractError, ValueError, TypeError, KeyError):
        return None


def _load(manifest: dict) -> Manifest | None:
    """What the service's loader makes of ``manifest`` written to disk; ``None`` when it refuses."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "manifest.json").write_text(json.dumps(manifest))
        try:
            return read_manifest(folder)
        except BundleError:
            return None


@PROPERTY
@given(name=names)
def test_writer_and_loader_accept_the_same_names(name: str) -> None:
    try:
        validate_name(name)
        written = True
    except ContractError:
        written = False
    try:
        validate_model_name(name)
        loaded = True
    except InputError:
        loaded = False
    assert written == loaded == is_valid_name(name)


@PROPERTY
@given(run=runs(), name=valid_names | names, listed=valid_files | files)
def test_whatever_the_writer_writes_the_loader_loads(run: dict, name: str, listed: dict[str, str]) -> None:
    manifest = _writer(run, name, listed)
    if manifest is not None:
        loaded = _load(manifest)
        assert loaded is not None
        assert loaded.kind == run["kind"] and loaded.threshold == float(run["threshold"]["score"])


@PROPERTY
@given(run=runs(), listed=files)
def test_whatever_the_loader_refuses_the_writer_never_writes(run: dict, listed: dict[str, str]) -> None:
    try:
        unchecked = build_manifest(run, "model", listed, CREATED, 18, check=False)
    except (ValueError, TypeError, KeyError):
        return  # the writer cannot even build it
    if _load(unchecked) is None:
        assert _writer(run, "model", listed) is None


def _tabular_run(feature_names: list[str]) -> dict:
    return RunRecord(
        kind="tabular",
        family="usflow",
        flow="usf",
        config={},
        input={"features": len(feature_names), "feature_names": feature_names},
        threshold={"score": 1.0, "method": "test"},
    ).to_json()


@pytest.mark.parametrize("name", ["cardio..v2", "a..", "Upper", "a/b", ""])
def test_writer_refuses_names_the_loader_refuses(name: str) -> None:
    """The bug: the writer used to accept ``cardio..v2``, which the loader refuses."""
    with pytest.raises(ContractError, match="not a valid bundle name"):
        build_manifest(_tabular_run(["a", "b"]), name, {"model.onnx": DIGEST}, CREATED, 18)
    with pytest.raises(InputError, match="invalid model name"):
        validate_model_name(name)


def test_writer_refuses_repeated_feature_names() -> None:
    """The other half: the writer never checked that feature names are distinct."""
    repeated = _tabular_run(["a", "a"])
    with pytest.raises(ContractError, match="distinct names"):
        build_manifest(repeated, "cardio", {"model.onnx": DIGEST}, CREATED, 18)
    unchecked = build_manifest(repeated, "cardio", {"model.onnx": DIGEST}, CREATED, 18, check=False)
    assert _load(unchecked) is None


def test_writer_refuses_a_non_finite_threshold() -> None:
    run = _tabular_run(["a", "b"])
    run["threshold"]["score"] = math.nan
    with pytest.raises(ContractError, match="threshold.score must be a finite number"):
        build_manifest(run, "cardio", {"model.onnx": DIGEST}, CREATED, 18)


def test_a_valid_manifest_round_trips() -> None:
    manifest = build_manifest(_tabular_run(["a", "b"]), "cardio-v2", {"model.onnx": DIGEST}, CREATED, 18)
    check_manifest(json.loads(json.dumps(manifest)))
    loaded = _load(manifest)
    assert loaded is not None and loaded.feature_names == ["a", "b"]
    assert loaded.version == f"2026-12-01T21-00-00Z-{DIGEST[:8]}"


@PROPERTY
@given(run=runs(), extra=st.dictionaries(st.sampled_from(["backbone", "profile", "training"]), st.integers()))
def test_run_record_round_trips_through_json(run: dict, extra: dict) -> None:
    record = RunRecord.from_json({**run, **extra, "created": CREATED})
    assert record.extra == extra and record.created == CREATED
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_calibration_mask_is_optional_image_only_and_names_its_statistic() -> None:
    run = _tabular_run(["a", "b"])
    run.update(kind="image", input={"height": 8, "width": 8, "channels": 3, "color_mode": "rgb"})
    calibration_name = "calibration-" + "0" * 12 + ".json"
    listed = {"model.onnx": DIGEST, calibration_name: DIGEST}
    manifest = build_manifest(run, "tile", listed, CREATED, 18, check=False)
    manifest["calibration"] = {"file": calibration_name, "n": 9, "default_fpr": 0.1}
    check_manifest(manifest)  # without mask: an image bundle exported before the maxima existed
    manifest["calibration"]["mask"] = {"statistic": "anomaly_map_max"}
    check_manifest(manifest)
    manifest["calibration"]["mask"] = {"statistic": "nfa"}
    with pytest.raises(ContractError, match="calibration.mask.statistic"):
        check_manifest(manifest)
    manifest["calibration"]["mask"] = {"statistic": "anomaly_map_max"}
    manifest["kind"], manifest["input"] = "tabular", {"features": 2}
    with pytest.raises(ContractError, match="only for image bundles"):
        check_manifest(manifest)
