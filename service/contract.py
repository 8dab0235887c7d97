"""The bundle and run contract (docs/contracts.md), written once.

Both sides use this module: the exporter (``training/export/manifest.py``) builds a manifest
and checks it here before writing it, and the loader (``service/bundles/manifest.py``) checks what it
reads here, so a bundle that exports always loads. It imports neither torch nor onnxruntime
(the service imports it; ``training`` may, ``service`` never imports ``training``).

Checks raise :class:`service.errors.ContractError` naming the key; each side wraps it in its own error
(``BundleError`` in the loader, ``ExportError`` in the writer).

Extending the manifest: write a checker ``(data) -> None`` for the new key (an optional key is
checked only when present, so older bundles keep loading) and append it to
``MANIFEST_CHECKS``; a new bundle file also goes into ``BUNDLE_FILES``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import ContractError

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
# The only files a bundle may list: these two and one calibration file ``calibration-<12 hex>.json``
# (docs/calibration.md); anything else, e.g. a pickle, is refused.
BUNDLE_FILES = (ONNX_FILE, TORCHSCRIPT_FILE)
CALIBRATION_FILE_PATTERN = re.compile(r"^calibration-[0-9a-f]{12}\.json$")
FORMAT_VERSION = 1
KINDS = ("tabular", "image")
COLOR_MODES = {"rgb": 3, "grayscale": 1}
TABULAR_OUTPUTS = ("score", "nll")
IMAGE_OUTPUTS = ("score", "nll", "anomaly_map")
DEFAULT_IMAGE_RESIZE = "bilinear"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "use 1-64 characters a-z 0-9 . _ - starting with a letter or digit, without '..'"
REQUIRED_KEYS = ("name", "version", "kind", "input", "outputs", "threshold", "files")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# ``calibration.mask.statistic`` values: the calibration file then also holds ``map_max``, the
# sorted maxima of the returned anomaly maps (docs/calibration.md). Optional: bundles without it
# load, and ``map=mask`` at a rate is refused for them.
MASK_STATISTICS = ("anomaly_map_max",)



def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a model/bundle name: ``^[a-z0-9][a-z0-9._-]{0,63}$`` and no ``..``.

    The name becomes a folder and a URL path segment, so path tricks never pass:

    >>> [is_valid_name(n) for n in ("cardio-usflow", "cardio..v2", "Upper", "", "a/b")]
    [True, False, False, False, False]
    """
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def output_names(kind: str) -> tuple[str, ...]:
    """Graph output names of a bundle of ``kind`` (``tabular`` or ``image``)."""
    if kind == "tabular":
        return TABULAR_OUTPUTS
    if kind == "image":
        return IMAGE_OUTPUTS
    raise ContractError(f"run kind must be 'tabular' or 'image', got {kind!r}")


def bundle_version(created: str, primary_sha256: str) -> str:
    """``<created, ':' → '-'>-<first 8 hex of the model file's sha256>``.

    >>> bundle_version("2026-11-29T05:00:00Z", "1a2b3c4d" + "0" * 56)
    '2026-11-29T05-00-00Z-1a2b3c4d'
    """
    return f"{created.replace(':', '-')}-{primary_sha256[:8]}"


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_header(data: dict[str, Any]) -> None:
    """``format_version``, the required keys, ``kind``, ``name`` and ``version``."""
    _require(data.get("format_version") == FORMAT_VERSION, f"format_version must be {FORMAT_VERSION}")
    for key in REQUIRED_KEYS:
        _require(key in data, f"manifest key {key!r} is missing")
    _require(data["kind"] in KINDS, f"kind must be one of {KINDS}, got {data['kind']!r}")
    _require(is_valid_name(data["name"]), f"name {str(data['name'])[:80]!r} is not a valid name: {NAME_RULE}")
    _require(isinstance(data["version"], str) and data["version"] != "", "version must be a string")


def check_input(data: dict[str, Any]) -> None:
    """``input``: distinct feature names (tabular) or a consistent image geometry."""
    spec = data["input"]
    _require(isinstance(spec, dict), "input must be an object")
    if data["kind"] == "tabular":
        features = spec.get("features")
        _require(_is_positive_int(features), "input.features must be a positive int")
        names = spec.get("feature_names")
        if names is not None:
            _require(
                isinstance(names, list)
                and all(isinstance(name, str) for name in names)
                and len(names) == features
                and len(set(names)) == features,
                "input.feature_names must list `features` distinct names",
            )
        return
    for key in ("height", "width", "channels"):
        _require(_is_positive_int(spec.get(key)), f"input.{key} must be a positive int")
    mode = spec.get("color_mode")
    _require(mode in COLOR_MODES, f"input.color_mode must be one of {list(COLOR_MODES)}")
    _require(COLOR_MODES[mode] == spec["channels"], "input.channels does not match input.color_mode")


def check_threshold(data: dict[str, Any]) -> None:
    """``threshold.score``: a finite number (a NaN threshold would answer every input "normal")."""
    threshold = data["threshold"]
    score = threshold.get("score") if isinstance(threshold, dict) else None
    _require(
        isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score),
        "threshold.score must be a finite number",
    )


def check_files(data: dict[str, Any]) -> None:
    """``files``: plain names from ``BUNDLE_FILES`` (``model.onnx`` required) with sha256 digests."""
    files = data["files"]
    _require(isinstance(files, dict) and ONNX_FILE in files, f"files must list {ONNX_FILE} with its sha256")
    for file_name, digest in files.items():
        _require(
            isinstance(file_name, str)
            and "/" not in file_name
            and "\\" not in file_name
            and file_name not in ("", ".", ".."),
            f"files: {file_name!r} is not a plain file name",
        )
        _require(
            file_name in BUNDLE_FILES or CALIBRATION_FILE_PATTERN.fullmatch(file_name) is not None,
            f"files: {file_name!r} is not a bundle file {BUNDLE_FILES} or calibration-<12 hex>.json",
        )
        _require(
            isinstance(digest, str) and SHA256_HEX.fullmatch(digest) is not None,
            f"files[{file_name!r}] is not a sha256 hex digest",
        )


def check_calibration(data: dict[str, Any]) -> None:
    """Optional ``calibration`` (docs/calibration.md): ``n``, the one listed calibration file, a
    ``default_fpr`` in ``[1/(n+1), 1)``, for flows the χ² law's ``dof`` and ``scale``, and for
    images an optional ``mask`` (the file then holds the maps' maxima too)."""
    listed = [name for name in data["files"] if CALIBRATION_FILE_PATTERN.fullmatch(name)]
    section = data.get("calibration")
    if section is None:
        _require(not listed, "files list a calibration file but the manifest has no calibration")
        return
    _require(isinstance(section, dict), "calibration must be an object")
    n = section.get("n")
    _require(_is_positive_int(n), "calibration.n must be a positive int")
    _require(listed == [section.get("file")], "calibration.file must be the one calibration file in files")
    fpr = section.get("default_fpr")
    _require(
        isinstance(fpr, int | float) and 1 / (n + 1) * (1 - 1e-9) <= fpr < 1,
        "calibration.default_fpr must lie in [1/(n+1), 1)",
    )
    analytic = section.get("analytic")
    if analytic is not None:
        _require(
            isinstance(analytic, dict)
            and _is_positive_int(analytic.get("dof"))
            and isinstance(analytic.get("scale"), int | float)
            and analytic["scale"] > 0,
            "calibration.analytic needs a positive int dof and a positive scale",
        )
    mask = section.get("mask")
    if mask is not None:
        _require(data["kind"] == "image", "calibration.mask is only for image bundles")
        _require(
            isinstance(mask, dict) and mask.get("statistic") in MASK_STATISTICS,
            f"calibration.mask.statistic must be one of {MASK_STATISTICS}",
        )


# In order: later checks may assume what earlier ones established.
MANIFEST_CHECKS: list[Callable[[dict[str, Any]], None]] = [
    check_header,
    check_input,
    check_threshold,
    check_files,
    check_calibration,
]


def check_manifest(data: object) -> None:
    """Raise :class:`ContractError` (naming the key) unless ``data`` is a valid manifest."""
    _require(isinstance(data, dict), "manifest is not a JSON object")
    for check in MANIFEST_CHECKS:
        check(data)  # type: ignore[arg-type]


@dataclass
class RunRecord:
    """``run.json``: what a training run wrote (docs/contracts.md, "Run directory").

    The keys every run has are fields; kind-specific ones (image runs' ``backbone``,
    ``profile`` and ``settings``, tabular runs' ``training``) go into ``extra`` and are
    written at the top level. ``created`` is filled in by ``training.runs.save_run``.

    >>> record = RunRecord(kind="tabular", family="usflow", flow="usf", config={},
    ...                    input={"features": 2, "feature_names": ["a", "b"]},
    ...                    threshold={"score": 1.5, "method": "fixed"})
    >>> RunRecord.from_json(record.to_json()) == record
    True
    """

    kind: str
    family: str
    flow: str | None
    config: dict[str, Any]
    input: dict[str, Any]
    threshold: dict[str, Any]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training_data: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``run.json`` (``extra`` flattened into it)."""
        data: dict[str, Any] = {} if self.created is None else {"created": self.created}
        for name in _RUN_FIELDS:
            if name not in ("created", "extra"):
                data[name] = getattr(self, name)
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        """Read a ``run.json`` object; keys that are not fields land in ``extra``."""
        missing = [name for name in ("kind", "family", "config", "input", "threshold") if name not in data]
        if missing:
            raise ContractError(f"run.json: {missing} missing")
        known = {name: data[name] for name in _RUN_FIELDS if name in data and name != "extra"}
        extra = {key: value for key, value in data.items() if key not in _RUN_FIELDS}
        return cls(**{"flow": None, **known}, extra=extra)


_RUN_FIELDS = tuple(RunRecord.__dataclass_fields__)
