"""Bundle manifests (docs/contracts.md): parse, validate, verify checksums. No onnxruntime import."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import BundleError, InputError

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
# The only files a bundle may list (docs/contracts.md): anything else, e.g. a pickle, is refused.
BUNDLE_FILES = (ONNX_FILE, "model.pt")
FORMAT_VERSION = 1
MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KINDS = ("tabular", "image")
COLOR_MODES = {"rgb": 3, "grayscale": 1}


def validate_model_name(name: object, field_name: str = "model") -> str:
    """Return ``name`` if it matches ``^[a-z0-9][a-z0-9._-]{0,63}$`` and is no path trick.

    Raises ``InputError`` (HTTP 422) naming ``field_name`` otherwise: ``..``, slashes,
    upper case, empty or over-long names never reach the file system.
    """
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InputError(
            field_name,
            f"invalid model name {str(name)[:80]!r}: use 1-64 characters a-z 0-9 . _ - "
            "starting with a letter or digit, without '..'",
        )
    return name


@dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json``; ``raw`` keeps every key as written."""

    name: str
    version: str
    kind: str
    input: dict[str, Any]
    threshold: float
    files: dict[str, str]
    raw: dict[str, Any] = field(repr=False)

    @property
    def features(self) -> int:
        """Number of input columns (tabular)."""
        return int(self.input["features"])

    @property
    def feature_names(self) -> list[str]:
        """Column names (tabular); ``f0 … f{F-1}`` when the manifest gives none."""
        names = self.input.get("feature_names")
        return list(names) if names else [f"f{i}" for i in range(self.features)]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` the image model expects."""
        return int(self.input["height"]), int(self.input["width"])

    @property
    def channels(self) -> int:
        """Image channels (1 grayscale, 3 RGB)."""
        return int(self.input["channels"])

    @property
    def color_mode(self) -> str:
        """``"rgb"`` or ``"grayscale"``."""
        return str(self.input["color_mode"])

    @property
    def has_anomaly_map(self) -> bool:
        """Whether the ONNX graph has an ``anomaly_map`` output (image models)."""
        return any(output.get("name") == "anomaly_map" for output in self.raw.get("outputs", []))


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise BundleError(f"{path}: {message}")


def parse_manifest(data: dict[str, Any], path: Path) -> Manifest:
    """Validate a manifest's structure (see docs/contracts.md); ``BundleError`` names the key."""
    _require(isinstance(data, dict), path, "manifest is not a JSON object")
    _require(data.get("format_version") == FORMAT_VERSION, path, f"format_version must be {FORMAT_VERSION}")
    for key in ("name", "version", "kind", "input", "outputs", "threshold", "files"):
        _require(key in data, path, f"manifest key {key!r} is missing")
    _require(data["kind"] in KINDS, path, f"kind must be one of {KINDS}, got {data['kind']!r}")
    _require(isinstance(data["version"], str) and data["version"] != "", path, "version must be a string")
    spec = data["input"]
    _require(isinstance(spec, dict), path, "input must be an object")
    if data["kind"] == "tabular":
        features = spec.get("features")
        _require(isinstance(features, int) and features > 0, path, "input.features must be a positive int")
        names = spec.get("feature_names")
        if names is not None:
            _require(
                isinstance(names, list) and len(names) == features and len(set(names)) == features,
                path,
                "input.feature_names must list `features` distinct names",
            )
    else:
        for key in ("height", "width", "channels"):
            _require(
                isinstance(spec.get(key), int) and spec[key] > 0, path, f"input.{key} must be a positive int"
            )
        mode = spec.get("color_mode")
        _require(mode in COLOR_MODES, path, f"input.color_mode must be one of {list(COLOR_MODES)}")
        _require(
            COLOR_MODES[mode] == spec["channels"], path, "input.channels does not match input.color_mode"
        )
    threshold = data["threshold"]
    _require(
        isinstance(threshold, dict)
        and isinstance(threshold.get("score"), int | float)
        and math.isfinite(threshold["score"]),
        path,
        "threshold.score must be a finite number",
    )
    files = data["files"]
    _require(
        isinstance(files, dict) and ONNX_FILE in files, path, f"files must list {ONNX_FILE} with its sha256"
    )
    for file_name, digest in files.items():
        _require(
            isinstance(file_name, str)
            and "/" not in file_name
            and "\\" not in file_name
            and file_name not in ("", ".", ".."),
            path,
            f"files: {file_name!r} is not a plain file name",
        )
        _require(file_name in BUNDLE_FILES, path, f"files: {file_name!r} is not a bundle file {BUNDLE_FILES}")
        _require(
            isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) is not None,
            path,
            f"files[{file_name!r}] is not a sha256 hex digest",
        )
    return Manifest(
        name=str(data["name"]),
        version=data["version"],
        kind=data["kind"],
        input=dict(spec),
        threshold=float(threshold["score"]),
        files=dict(files),
        raw=data,
    )


def read_manifest(bundle_dir: str | Path) -> Manifest:
    """Read and validate ``BUNDLE_DIR/manifest.json`` (checksums are not verified here)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle: {MANIFEST_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: cannot read JSON ({error})") from error
    return parse_manifest(data, path)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(bundle_dir: str | Path, manifest: Manifest) -> None:
    """Check every file listed in ``manifest.files`` against its sha256; ``BundleError`` otherwise."""
    root = Path(bundle_dir)
    for file_name, expected in manifest.files.items():
        path = root / file_name
        if not path.is_file():
            raise BundleError(f"{root}: {file_name} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{root}: sha256 of {file_name} is {actual[:16]}…, the manifest says {expected[:16]}…; "
                "the bundle is corrupt or was changed after export"
            )


def bundle_signature(bundle_dir: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detector: ``(name, mtime_ns, size)`` of every file in the bundle directory."""
    entries = []
    for path in sorted(Path(bundle_dir).iterdir()):
        if path.is_file():
            stat = path.stat()
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)
