"""``usfad calibrate``: replace a bundle's calibration with new normal data, without retraining.

The bundle is scored with the service's own loader (checksums verified, ONNX Runtime on the
CPU, images decoded and resized like the service does), so the calibration scores (and, for
images, the maxima of the returned anomaly maps that ``map=mask`` is cut from) are exactly what
the service computes. An image bundle exported before the maxima existed gains them here.
The new version is written atomically:

- in place (a served bundle): the new ``calibration-<hash>.json`` is written first (through a
  temporary file and ``os.replace``), then ``manifest.json`` is replaced in one ``os.replace``,
  then the old calibration file is removed. Every state a reader can see is a complete,
  checksum-consistent bundle (old or new), so the workers' 2 s rescan hot-reloads it;
- to ``--out``: a copy is assembled in a hidden sibling folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from service.bundles.bundle import Bundle, load_bundle
from service.calibration import DEFAULT_FPR, map_maxima, sorted_scores
from service.contract import CALIBRATION_FILE_PATTERN, MANIFEST_FILE
from service.errors import CalibrationError, InputError
from training.export.manifest import bundle_version
from training.export.score_inputs import image_files, read_image, read_tabular_input
from training.export.writer import add_calibration, staged_bundle
from training.runs import fingerprint_array, utc_now

CHUNK = 256


def calibration_scores(bundle: Bundle, data: list[str], label_column: str | None = None) -> tuple[
    np.ndarray, dict[str, Any], np.ndarray | None
]:
    """Scores of the normal inputs in ``data``, the description of that data for the manifest, and
    (images) per input the maximum of its returned anomaly map, the statistic of ``map=mask``.

    Tabular: one ``.csv`` / ``.npz``; rows labelled 1 (``y`` of an npz, or ``--label-column``) are
    dropped, since only normal data may calibrate. Images: files or folders of good images.
    """
    manifest = bundle.manifest
    maxima: list[np.ndarray] | None = None
    if manifest.kind == "tabular":
        if len(data) != 1:
            raise InputError("--data", "a tabular bundle takes one .csv or .npz file")
        table = read_tabular_input(data[0], manifest, label_column)
        rows = np.asarray(table.rows, dtype=np.float64)
        dropped = 0
        if table.labels is not None:
            dropped = int((table.labels == 1).sum())
            rows = rows[table.labels == 0]
        inputs = rows.astype(np.float32)
        scores = [bundle.score_tabular(inputs[i : i + CHUNK]).score for i in range(0, len(inputs), CHUNK)]
        described = {"fingerprint": fingerprint_array(rows), "rows": len(rows), "source": str(data[0])}
        split = f"normal rows of {data[0]}"
        if dropped:
            split += f" ({dropped} rows labelled anomalous dropped)"
    else:
        files = image_files(data)
        scores = []
        maxima = [] if manifest.has_anomaly_map else None
        for start in range(0, len(files), 16):
            batch = np.stack([read_image(path, manifest) for path in files[start : start + 16]])
            outputs = bundle.score_images(batch)
            scores.append(outputs.score)
            if maxima is not None and outputs.anomaly_map is not None:
                maxima.append(map_maxima(outputs.anomaly_map))  # the map as the service returns it
        listing = np.array([f"{path.name}:{path.stat().st_size}" for path in files])
        described = {"fingerprint": fingerprint_array(listing), "rows": len(files), "source": ", ".join(data)}
        split = f"good images in {', '.join(data)}"
    if not scores:
        raise InputError("--data", "no normal inputs to calibrate on")
    values = np.concatenate(scores).astype(np.float64)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise InputError("--data", f"{bad} of {values.size} calibration inputs got a non-finite score")
    map_max = np.concatenate(maxima) if maxima else None
    if map_max is not None and not np.isfinite(map_max).all():
        bad = int((~np.isfinite(map_max)).sum())
        raise InputError("--data", f"{bad} of {map_max.size} calibration images got a non-finite anomaly map")
    return values, {"split": split, "data": described}, map_max


def _write_atomic(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "wb") as stream:
        stream.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def calibrate_bundle(
    bundle_dir: str | Path,
    data: list[str],
    out: str | Path | None = None,
    default_fpr: float = DEFAULT_FPR,
    label_column: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Recalibrate ``bundle_dir`` on the normal data ``data``; returns the new manifest."""
    source_dir = Path(bundle_dir).resolve()
    bundle = load_bundle(source_dir, device="cpu", threads=1)
    values, described, maxima = calibration_scores(bundle, data, label_column)
    try:
        scores = sorted_scores(values)
        map_max = sorted_scores(maxima) if maxima is not None else None
    except CalibrationError as error:
        raise InputError("--data", str(error)) from error
    manifest = json.loads((source_dir / MANIFEST_FILE).read_text())
    previous = (manifest.get("calibration") or {}).get("analytic")
    law = None
    if previous:
        law = {key: previous[key] for key in ("law", "dof", "scale", "statistic") if key in previous}
    created = utc_now()
    target = Path(out).resolve() if out is not None else source_dir
    if target == source_dir:
        add_calibration(
            manifest, source_dir, scores, described, created, default_fpr, law=law, map_max=map_max
        )
        _finish_manifest(manifest, bundle, created)
        old = [p for p in source_dir.iterdir() if CALIBRATION_FILE_PATTERN.fullmatch(p.name)]
        _write_atomic(source_dir / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
        for path in old:
            if path.name not in manifest["files"]:
                path.unlink(missing_ok=True)
        return manifest
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise InputError("--out", f"{target} exists and is not empty; pass --overwrite to replace it")
    with staged_bundle(target) as staging:
        for name in manifest["files"]:
            if not CALIBRATION_FILE_PATTERN.fullmatch(name):
                shutil.copy2(source_dir / name, staging / name)
        add_calibration(manifest, staging, scores, described, created, default_fpr, law=law, map_max=map_max)
        manifest["name"] = target.name
        _finish_manifest(manifest, bundle, created)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _finish_manifest(manifest: dict[str, Any], bundle: Bundle, created: str) -> None:
    """A new version: calibration time, ONNX hash, and the calibration file's hash."""
    manifest["recalibrated_from"] = bundle.version
    calibration_hash = manifest["calibration"]["file"][len("calibration-") : len("calibration-") + 8]
    manifest["version"] = f"{bundle_version(created, manifest['files']['model.onnx'])}-c{calibration_hash}"
