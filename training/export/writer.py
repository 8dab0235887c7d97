"""``export_bundle``: run directory → bundle directory (manifest + ONNX + TorchScript).

The bundle is assembled in a hidden sibling folder and renamed into place only after every
file was written, checked for parity against the eager model and checksummed, so a failed
export never leaves a half-written bundle where the service could pick it up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from service.calibration import DEFAULT_FPR, calibration_file, calibration_section, conformal_threshold
from service.contract import check_input, check_manifest, check_threshold
from service.errors import ContractError
from training.calibration import analytic_entry, analytic_law, read_run_calibration, read_run_map_maxima
from training.export.graphs import ONNX_OPSET, export_onnx, save_torchscript, trace_scorer
from training.export.manifest import (
    MANIFEST_FILE,
    build_manifest,
    input_spec,
    output_names,
    sha256_file,
    validate_name,
)
from training.export.parity import EXPORT_CHECK_SLACK, compare_outputs, parity_failures, typical_magnitude
from training.export.probes import probe_input
from training.export.runners import EagerRunner, OnnxRunner, TorchScriptRunner
from training.export.safety import UnsafeArtifactError, check_onnx_file, check_torchscript_archive
from training.runs import load_scorer, read_run, utc_now

FORMAT_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
# Families that are scikit-learn references (no torch graph): benchmark only, never exported.
REFERENCE_FAMILIES = frozenset({"knn", "iforest", "isolation_forest", "ocsvm", "lof"})
PARITY_BATCH_SIZES = (1, 7)
INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "tabular": ("features",),
    "image": ("height", "width", "channels", "color_mode"),
}


class ExportError(ValueError):
    """The run cannot be exported as asked; the message says why and what to change."""


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"onnx,torchscript"`` → ``("onnx", "torchscript")``; unknown or empty lists are refused."""
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    unknown = [item for item in formats if item not in FORMAT_FILES]
    if unknown or not formats:
        raise ExportError(
            f"--format: expected a comma-separated subset of {list(FORMAT_FILES)}, got {text!r}"
        )
    return formats


def check_exportable(run: dict[str, Any], run_dir: str | Path) -> None:
    """Refuse runs that cannot become a bundle, with the reason."""
    family = run.get("family")
    if family in REFERENCE_FAMILIES:
        raise ExportError(
            f"{run_dir}: family {family!r} is a scikit-learn reference used only in benchmarks; "
            "it has no torch graph and cannot be exported"
        )
    kind = run.get("kind")
    if kind not in ("tabular", "image"):
        raise ExportError(f"{run_dir}/run.json: kind must be 'tabular' or 'image', got {kind!r}")
    spec = run.get("input")
    needed = INPUT_KEYS[kind]
    if not isinstance(spec, dict) or any(key not in spec for key in needed):
        raise ExportError(f"{run_dir}/run.json: input must be an object with {list(needed)}, got {spec!r}")
    threshold = run.get("threshold")
    if not isinstance(threshold, dict) or not isinstance(threshold.get("score"), int | float):
        raise ExportError(f"{run_dir}/run.json: threshold.score is missing; the bundle needs a threshold")
    try:  # the loader's own checks (service.contract), before any graph is traced
        check_input({"kind": kind, "input": input_spec(run)})
        check_threshold(run)
    except (ContractError, TypeError, ValueError) as error:
        raise ExportError(f"{run_dir}/run.json: {error}") from error
    if (run.get("fit") or {}).get("failed"):
        raise ExportError(f"{run_dir}: training failed (non-finite loss); retrain before exporting")


def _check_parity(
    scorer: nn.Module, run: dict[str, Any], folder: Path, formats: Sequence[str]
) -> dict[str, Any]:
    """Compare each exported file with eager PyTorch on random probe batches of 1 and 7.

    Differences are relative to ``max(|b|, median |b| of the output on the batch of 7)``.
    Refuses (``ExportError``) differences over ``EXPORT_CHECK_SLACK`` × the test tolerances;
    returns the measured maxima, which go into the manifest.
    """
    names = output_names(run["kind"])
    eager = EagerRunner(scorer)
    runners: dict[str, Any] = {}
    if "onnx" in formats:
        runners["onnx"] = OnnxRunner(folder / FORMAT_FILES["onnx"])
    if "torchscript" in formats:
        runners["torchscript"] = TorchScriptRunner(folder / FORMAT_FILES["torchscript"])
    measured: dict[str, dict[str, float]] = {fmt: dict.fromkeys(names, 0.0) for fmt in runners}
    # Signed scores (DOHSC's d² − R²) cross zero on random probes; differences are taken
    # relative to at least the output's typical magnitude on the largest probe batch.
    largest = max(PARITY_BATCH_SIZES)
    scale_outputs = eager(np.ascontiguousarray(probe_input(run, largest, seed=largest).numpy()))
    floors = {name: typical_magnitude(values) for name, values in zip(names, scale_outputs, strict=True)}
    for batch in PARITY_BATCH_SIZES:
        probe = np.ascontiguousarray(probe_input(run, batch, seed=batch).numpy())
        reference = eager(probe)
        for fmt, runner in runners.items():
            differences = compare_outputs(runner(probe), reference, names, floors)
            failures = parity_failures(differences, EXPORT_CHECK_SLACK)
            if failures:
                raise ExportError(f"exported {fmt} graph disagrees with PyTorch at batch {batch}: {failures}")
            for name, value in differences.items():
                measured[fmt][name] = max(measured[fmt][name], float(f"{value:.3g}"))
    return {
        "reference": "PyTorch eager (float32, CPU)",
        "inputs": f"random probe batches of {list(PARITY_BATCH_SIZES)} (see training/export/probes.py)",
        "difference": "max |a - b| / max(|b|, median |b| of the output on the probe batch of 7)",
        "max_relative_difference": measured,
    }


def add_calibration(
    manifest: dict[str, Any],
    folder: Path,
    scores: np.ndarray,
    source: dict[str, Any],
    created: str,
    default_fpr: float = DEFAULT_FPR,
    law: dict[str, Any] | None = None,
    map_max: np.ndarray | None = None,
) -> None:
    """Write ``scores`` as the bundle's calibration file and record it in ``manifest`` (in place).

    ``source`` is the run (or, for ``usfad calibrate``, the calibration data's description with
    ``split`` and ``data``); the χ² law of tabular flows is ``law`` or comes from the run's config.
    ``map_max`` (image bundles): the sorted maxima of the same inputs' returned anomaly maps, the
    statistic ``map=mask`` is calibrated on (``calibration.mask`` in the manifest).
    """
    entry = source.get("calibration") or source
    file_name, data = calibration_file(scores, map_max)
    # Through a temporary file and os.replace: a served bundle never shows a half-written file.
    handle, temporary = tempfile.mkstemp(prefix=f".{file_name}.", dir=folder)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, folder / file_name)
    files = {k: v for k, v in manifest["files"].items() if not k.startswith("calibration-")}
    files[file_name] = sha256_file(folder / file_name)
    manifest["files"] = dict(sorted(files.items()))
    if law is None and "config" in source:
        law = analytic_law(manifest, source["config"])
    section = calibration_section(
        scores,
        file_name,
        entry.get("data") or {},
        f"split conformal on {entry.get('split', 'held-out normal data')}",
        created,
        analytic_entry(law, scores),
        default_fpr,
        map_max,
    )
    manifest["calibration"] = section
    previous = manifest.get("threshold") or {}
    run_threshold = previous.get("run", previous if "fpr" not in previous else None)
    manifest["threshold"] = {
        **conformal_threshold(scores, section["default_fpr"], section["n"]),
        "run": run_threshold,
    }


@contextmanager
def staged_bundle(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to build a bundle in, moved to ``out`` in one rename.

    The ``with`` body fills it (``manifest.json`` last); when the body ends without an error it
    replaces ``out``, so the service never sees a half-written bundle. On an error it is removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the service may run as another user
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = ("onnx", "torchscript"),
    name: str | None = None,
    overwrite: bool = False,
    default_fpr: float = DEFAULT_FPR,
) -> dict[str, Any]:
    """Export the run in ``run_dir`` to the bundle folder ``out_dir``; returns the manifest.

    The model name defaults to ``out_dir``'s folder name. A run with calibration scores gets
    them as ``calibration-<hash>.json`` (checksummed, see docs/calibration.md); its manifest
    threshold is then the conformal score cut at ``default_fpr`` (the run's own threshold is
    kept under ``threshold.run``). Raises :class:`ExportError` for a run
    that cannot be exported, an invalid name, an existing non-empty ``out_dir`` (unless
    ``overwrite``) or exported graphs that disagree with the eager model.
    """
    out = Path(out_dir).resolve()
    formats = parse_formats(formats)
    try:
        bundle_name = validate_name(name if name is not None else out.name)
    except ValueError as error:
        hint = "" if name is not None else " (it defaults to the --out folder name; pass --name)"
        raise ExportError(f"--name: {error}{hint}") from error
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out: {out} exists and is not empty; pass --overwrite to replace it")
    run = read_run(run_dir)
    check_exportable(run, run_dir)
    try:
        scorer, run = load_scorer(run_dir)
    except (RuntimeError, KeyError, ValueError) as error:
        # e.g. weights.pt saved by an older version of the model code: say so, without a traceback.
        raise ExportError(
            f"{run_dir}: cannot rebuild the model from run.json + weights.pt: {str(error)[:300]}"
        ) from error
    if not isinstance(scorer, nn.Module):
        raise ExportError(f"{run_dir}: family {run.get('family')!r} has no torch scorer to export")
    example = probe_input(run, batch=3)
    with staged_bundle(out) as staging:
        traced = trace_scorer(scorer, example)
        if "onnx" in formats:
            export_onnx(traced, example, staging / FORMAT_FILES["onnx"], output_names(run["kind"]))
        if "torchscript" in formats:
            save_torchscript(traced, staging / FORMAT_FILES["torchscript"])
        try:
            if "onnx" in formats:
                check_onnx_file(staging / FORMAT_FILES["onnx"])
            if "torchscript" in formats:
                check_torchscript_archive(staging / FORMAT_FILES["torchscript"])
        except UnsafeArtifactError as error:
            raise ExportError(str(error)) from error
        parity = _check_parity(scorer, run, staging, formats)
        files = {FORMAT_FILES[fmt]: sha256_file(staging / FORMAT_FILES[fmt]) for fmt in formats}
        opset = ONNX_OPSET if "onnx" in formats else None
        created = utc_now()
        try:
            manifest = build_manifest(run, bundle_name, files, created, opset, parity)
            calibration = read_run_calibration(run_dir, run)
            if calibration is not None:
                map_max = read_run_map_maxima(run_dir, run) if run["kind"] == "image" else None
                add_calibration(manifest, staging, calibration, run, created, default_fpr, map_max=map_max)
                check_manifest(manifest)
        except ContractError as error:
            # The loader would refuse this bundle; never write it.
            raise ExportError(f"{run_dir}: {error}") from error
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
