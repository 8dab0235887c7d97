"""``map=mask``: a defect mask at a controlled family-wise rate (docs/calibration.md).

The statistic is the maximum ``m`` of the *returned* anomaly map (the graph's ``anomaly_map``
output, smoothed as served, at the model's resolution); it is not the image ``score`` (the CPU
default scores the top-1 % mean of the raw map). A calibrated image bundle stores, next to the
calibration scores, the sorted ``map_max`` of the same ``n`` held-out good images
(``calibration.mask`` in the manifest). At rate ``α`` the cut is ``t = map_cut(map_max, α)``
and the mask is ``{pixels : map > t}``: it is non-empty exactly when ``m > t``, i.e. when the
conformal p-value of ``m`` is ``≤ α``. For a good image exchangeable with the calibration images
that happens with probability at most ``α``: the rate controlled is the per-image family-wise
rate, the chance that a good image shows *any* masked pixel (max-statistic over its pixels). It
says nothing about the share of masked pixels that are false within a defective image, and the
mask and ``is_anomaly`` test different statistics, so either may fire without the other.

Bundles without ``map_max`` (exported before it existed) refuse ``map=mask`` at a rate with a
422 (``check_mask``); with ``threshold`` the map is cut at that raw value, with no rate promised.
The mask is thresholded at the model's resolution and then resized to the image's own size by
nearest neighbour. The API reads the calibration file itself (checksum verified against the
served manifest) to cut at a requested ``fpr``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.bundles.manifest import Manifest
from service.calibration import map_cut, read_map_maxima
from service.errors import CalibrationError, InputError
from service.schemas import MapFormat


def mask_answer(anomaly_map: np.ndarray, cut: float, height: int, width: int) -> dict[str, Any]:
    """``AnomalyMap``'s shape for the mask ``anomaly_map > cut`` at ``height × width``: a black /
    white PNG (white: defect), the cut and the number of defect pixels."""
    mask = ~(np.asarray(anomaly_map, dtype=np.float64) <= cut)  # a non-finite value is a defect
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    pixels = int((np.asarray(image) > 0).sum())
    return {
        "format": MapFormat.mask.value,
        "width": width,
        "height": height,
        "low": cut,
        "high": cut,
        "png_base64": base64.b64encode(buffer.getvalue()).decode(),
        "values": None,
        "cut": cut,
        "defect_pixels": pixels,
    }


def check_mask(model: str, manifest: Manifest, threshold: float | None, fdr: float | None) -> None:
    """422 (``InputError`` on ``map``) for a ``map=mask`` request this bundle cannot certify."""
    if fdr is not None:
        raise InputError("map", "map=mask cuts at a false-alarm rate: use fpr or threshold, not fdr")
    if threshold is None and not manifest.mask_calibrated:
        raise InputError(
            "map",
            f"model {model!r} stores no anomaly-map maxima of its calibration images (exported before "
            "map=mask was calibrated), so no mask rate can be certified; recalibrate it with "
            "`usfad calibrate BUNDLE --data GOOD_IMAGES`, or pass threshold for a raw cut without a rate",
        )


class CalibrationFiles:
    """The API's cache of served calibration map maxima, keyed by model, version and file."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def cut(self, model: str, manifest: Manifest, fpr: float) -> float:
        """``map_cut`` of the manifest's calibration maxima at ``fpr``; ``CalibrationError`` if unusable."""
        section = manifest.calibration
        if section is None or not manifest.mask_calibrated:
            raise CalibrationError("the model stores no calibration map maxima")
        key = (model, manifest.version, section["file"])
        with self._lock:
            maxima = self._cache.get(key)
        if maxima is None:
            path = self.model_dir / model / section["file"]
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != manifest.files.get(section["file"]):
                raise CalibrationError(f"{path} changed since its manifest was read")
            maxima = read_map_maxima(data, int(section["n"]))
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items() if k[0] != model}
                self._cache[key] = maxima
        return map_cut(maxima, fpr)
