"""Build the bundle manifest (``manifest.json``) from a run; the rules are ``service.contract``'s.

``build_manifest`` checks its result with the loader's own ``check_manifest`` before it
returns, so an export that succeeds always loads (docs/contracts.md).
"""

from __future__ import annotations

from typing import Any

from service.contract import (
    DEFAULT_IMAGE_RESIZE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    NAME_RULE,
    RunRecord,
    bundle_version,
    check_manifest,
    is_valid_name,
    output_names,
    sha256_file,
)
from service.errors import ContractError

__all__ = [
    "MANIFEST_FILE",
    "build_manifest",
    "input_spec",
    "output_names",
    "sha256_file",
    "validate_name",
]


def validate_name(name: str) -> str:
    """Return ``name`` if the loader accepts it as a model name, else raise ``ContractError``.

    >>> validate_name("cardio-usflow")
    'cardio-usflow'
    >>> validate_name("cardio..v2")
    Traceback (most recent call last):
    ...
    service.errors.ContractError: name 'cardio..v2' is not a valid bundle name: use 1-64 ...
    """
    if not is_valid_name(name):
        raise ContractError(f"name {name!r} is not a valid bundle name: {NAME_RULE}")
    return name


def _run_dict(run: RunRecord | dict[str, Any]) -> dict[str, Any]:
    return run.to_json() if isinstance(run, RunRecord) else run


def input_spec(run: RunRecord | dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``input`` entry from a run's ``kind`` and ``input`` (docs/contracts.md)."""
    run = _run_dict(run)
    spec = run.get("input") or {}
    if run["kind"] == "tabular":
        features = int(spec["features"])
        names = list(spec.get("feature_names") or [f"f{i}" for i in range(features)])
        if len(names) != features:
            raise ContractError(f"run.json input: {len(names)} feature_names for {features} features")
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


def output_spec(run: RunRecord | dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's ``outputs``: per-row ``score`` and ``nll`` (+ ``anomaly_map`` N×1×H×W)."""
    run = _run_dict(run)
    outputs: list[dict[str, Any]] = [{"name": "score", "shape": ["N"]}, {"name": "nll", "shape": ["N"]}]
    if run["kind"] == "image":
        spec = run["input"]
        outputs.append({"name": "anomaly_map", "shape": ["N", 1, int(spec["height"]), int(spec["width"])]})
    return outputs


def build_manifest(
    run: RunRecord | dict[str, Any],
    name: str,
    files: dict[str, str],
    created: str,
    opset: int | None,
    parity: dict[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """The full manifest of a bundle exported from ``run`` with file checksums ``files``.

    ``parity`` records the export-time comparison of the files with eager PyTorch.

    The version's hash part comes from ``model.onnx`` (or ``model.pt`` for a TorchScript-only
    bundle), so two exports of different graphs never share a version. Raises
    ``ContractError`` for anything the loader would refuse (e.g. repeated feature names);
    ``check=False`` skips that (only the contract tests use it).
    """
    if check:
        validate_name(name)
    run = _run_dict(run)
    primary = files.get("model.onnx") or files["model.pt"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
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
    if check:
        check_manifest(manifest)
    return manifest
