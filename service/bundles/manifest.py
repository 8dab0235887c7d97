"""Bundle manifests (docs/contracts.md): parse, validate, verify checksums. No onnxruntime import.

The rules themselves live in ``service.contract``, which the exporter checks too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.contract import MANIFEST_FILE, NAME_RULE, check_manifest, is_valid_name, sha256_file
from service.errors import BundleError, ContractError, InputError


def validate_model_name(name: object, field_name: str = "model") -> str:
    """Return ``name`` if it matches ``^[a-z0-9][a-z0-9._-]{0,63}$`` and is no path trick.

    Raises ``InputError`` (HTTP 422) naming ``field_name`` otherwise: ``..``, slashes,
    upper case, empty or over-long names never reach the file system.
    """
    if not is_valid_name(name):
        raise InputError(field_name, f"invalid model name {str(name)[:80]!r}: {NAME_RULE}")
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
    def calibration(self) -> dict[str, Any] | None:
        """The ``calibration`` entry (n, default_fpr, file, data, analytic) or ``None``."""
        return self.raw.get("calibration")

    @property
    def calibration_n(self) -> int | None:
        """Number of calibration scores, ``None`` for an uncalibrated bundle."""
        section = self.calibration
        return int(section["n"]) if section else None

    @property
    def mask_calibrated(self) -> bool:
        """Whether the calibration file holds the maxima of the returned maps (``map=mask`` at a rate)."""
        section = self.calibration
        return bool(section) and section.get("mask") is not None

    @property
    def has_anomaly_map(self) -> bool:
        """Whether the ONNX graph has an ``anomaly_map`` output (image models)."""
        return any(output.get("name") == "anomaly_map" for output in self.raw.get("outputs", []))


def parse_manifest(data: dict[str, Any], path: Path) -> Manifest:
    """Validate a manifest against ``service.contract``; ``BundleError`` names the file and key."""
    try:
        check_manifest(data)
    except ContractError as error:
        raise BundleError(f"{path}: {error}") from error
    return Manifest(
        name=str(data["name"]),
        version=data["version"],
        kind=data["kind"],
        input=dict(data["input"]),
        threshold=float(data["threshold"]["score"]),
        files=dict(data["files"]),
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
