"""``map=mask``: a defect mask cut at the image score's conformal cut.

When an image model's ``score`` is the maximum of its returned ``anomaly_map`` (``map_sigma = 0``
and ``score_top_fraction = 0``), the calibration of the score *is* a max-statistic calibration
of the map, and the rate below is controlled. The CPU default since issue 11 scores the top-1 %
mean of the raw map and returns a smoothed map: then the mask is only the map cut at the
score's cut, and its rate is NOT certified (docs/calibration.md). With the score
cut ``t`` of rate ``α`` (``service.calibration.score_cut``), the mask ``{pixels : map > t}`` of a
good image exchangeable with the calibration images is non-empty exactly when ``p_value ≤ α``,
i.e. with probability at most ``α``. The rate controlled is the per-image family-wise rate of
false defect pixels: the chance that a good image shows *any* masked pixel. It says nothing
about the share of masked pixels that are false within a defective image.

The mask is thresholded at the model's resolution and then resized to the image's own size by
nearest neighbour, so resizing never adds or removes a defect. The API reads the calibration
file itself (checksum verified against the served manifest) to cut at a requested ``fpr``.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.calibration import CalibrationError, read_calibration_file, score_cut
from service.contract import sha256_file
from service.manifest import Manifest
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


class CalibrationFiles:
    """The API's cache of served calibration scores, keyed by model, version and file."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def cut(self, model: str, manifest: Manifest, fpr: float) -> float:
        """``score_cut`` of the manifest's calibration at ``fpr``; ``CalibrationError`` if unusable."""
        section = manifest.calibration
        if section is None:
            raise CalibrationError("the model has no calibration")
        key = (model, manifest.version, section["file"])
        with self._lock:
            scores = self._cache.get(key)
        if scores is None:
            path = self.model_dir / model / section["file"]
            data = path.read_bytes()
            if sha256_file(path) != manifest.files.get(section["file"]):
                raise CalibrationError(f"{path} changed since its manifest was read")
            scores = read_calibration_file(data, int(section["n"]))
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items() if k[0] != model}
                self._cache[key] = scores
        return score_cut(scores, fpr)
