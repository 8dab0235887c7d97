"""The bundle manifest (``manifest.json``): what a bundle is, where it came from, its checksums."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TABULAR_OUTPUTS = ("score", "nll")
IMAGE_OUTPUTS = ("score", "nll", "anomaly_map")
DEFAULT_IMAGE_RESIZE = "bilinear"


def validate_name(name: str) -> str:
    """Return ``name`` if it matches ``^[a-z0-9][a-z0-9._-]{0,63}$``, else raise ``ValueError``."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"name {name!r} is not a valid bundle name: use 1-64 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_version(created: str, primary_sha256: str) -> str:
    """``<created, ':' → '-'>-<first 8 hex of the model file's sha256>``.

    E.g. ``2026-11-29T05-00-00Z-1a2b3c4d``.
    """
    return f"{created.replace(':', '-')}-{primary_sha256[:8]}"


def output_names(kind: str) -> tuple[str, ...]:
    """Graph output names of a bundle of ``kind`` (``tabular`` or ``image``)."""
    if kind == "tabular":
        return TABULAR_OUTPUTS
    if kind == "image":
        return IMAGE_OUTPUTS
    raise ValueError(f"run kind must be 'tabular' or 'image', got {kind!r}")


def input_spec(run: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``input`` entry from a run's ``kind`` and ``input`` (docs/contracts.md)."""
    spec = run.get("input") or {}
    if run["kind"] == "tabular":
        features = int(spec["features"])
        names = list(spec.get("feature_names") or [f"f{i}" for i in range(features)])
        if len(names) != features:
            raise ValueError(f"run.json input: {len(names)} feature_names for {features} features")
        return {"name": "input", "dtype": "float32", "features": features, "feature_names": names}
    return {
        "name": "input",
        "dtype": "uint8",
        "layout": "NHWC",
        "height": int(spec["height"]),
        "width": int(spec["width"]),
        "channels": int(spec["channels"]),
        "color_mode": spec["color_mode"],
        "resize": spec.get("resize", DEFAULT_IMAGE_RESIZE),
    }


def output_spec(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's ``outputs``: per-row ``score`` and ``nll`` (+ ``anomaly_map`` N×1×H×W)."""
    outputs: list[dict[str, Any]] = [{"name": "score", "shape": ["N"]}, {"name": "nll", "shape": ["N"]}]
    if run["kind"] == "image":
        spec = run["input"]
        outputs.append({"name": "anomaly_map", "shape": ["N", 1, int(spec["height"]), int(spec["width"])]})
    return outputs


def build_manifest(
    run: dict[str, Any],
    name: str,
    files: dict[str, str],
    created: str,
    opset: int | None,
    parity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full manifest of a bundle exported from ``run`` with file checksums ``files``.

    ``parity`` records the export-time comparison of the files with eager PyTorch.

    The version's hash part comes from ``model.onnx`` (or ``model.pt`` for a TorchScript-only
    bundle), so two exports of different graphs never share a version.
    """
    primary = files.get("model.onnx") or files["model.pt"]
    return {
        "format_version": FORMAT_VERSION,
        "name": validate_name(name),
        "version": bundle_version(created, primary),
        "kind": run["kind"],
        "family": run["family"],
        "flow": run.get("flow"),
        "input": input_spec(run),
        "outputs": output_spec(run),
        "threshold": run.get("threshold"),
        "training_data": run.get("training_data"),
        "metrics": run.get("metrics") or {},
        "created": created,
        "opset": opset,
        "parity": parity,
        "files": dict(sorted(files.items())),
    }
