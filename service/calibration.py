"""Conformal calibration of anomaly scores: p-values, false-alarm cuts, Benjamini–Hochberg.

The one place of this math, shared by training (which stores the calibration scores), export,
``usfad calibrate`` and the service (which answers with p-values). Torch-free and scipy-free
(the API image has neither); the χ² law of flows is in ``service.analytic`` (workers only).

Split conformal p-value of a score ``s`` against the ``n`` scores ``C`` of held-out normal data
(Bates et al., 2023, "Testing for outliers with conformal p-values")::

    p(s) = (1 + #{c ∈ C : c ≥ s}) / (n + 1)

If ``s`` and ``C`` are exchangeable (``s`` comes from the same normal data as ``C``), then
``P(p(s) ≤ α) ≤ α`` for every ``α``, and ``= ⌊α(n + 1)⌋ / (n + 1)`` without ties. The smallest
p-value is ``1 / (n + 1)``, so a false-alarm rate below that cannot be certified. A non-finite
score (overflow) always gets that smallest p-value: it is never called normal.

``map=mask`` is the same test on another statistic: the maximum of an image's returned
(smoothed, as served) anomaly map, calibrated on the same images' map maxima (``map_cut``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import orjson

from service.contract import MASK_STATISTICS
from service.errors import CalibrationError

DEFAULT_FPR = 0.01
DRIFT_LEVELS = (0.01, 0.05)
# ``calibration.mask.statistic`` of a bundle whose file stores the maxima of the returned maps.
MASK_STATISTIC = MASK_STATISTICS[0]
# Decisions compare p ≤ fpr; a relative slack absorbs the rounding of (1 + k) / (n + 1).
_SLACK = 1e-9



def min_fpr(n: int) -> float:
    """The smallest false-alarm rate ``n`` calibration scores can certify: ``1 / (n + 1)``."""
    return 1.0 / (n + 1)


def required_n(fpr: float) -> int:
    """Calibration scores needed to certify ``fpr``: the least ``n`` with ``1 / (n + 1) ≤ fpr``."""
    return max(1, math.ceil(1.0 / fpr * (1 - _SLACK) - 1))


def certifiable(fpr: float, n: int) -> bool:
    """Whether ``fpr ≥ 1 / (n + 1)``."""
    return fpr * (1 + _SLACK) >= min_fpr(n)


def sorted_scores(scores: Any) -> np.ndarray:
    """Calibration scores as a sorted float64 array; ``CalibrationError`` if empty or non-finite."""
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise CalibrationError("no calibration scores")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise CalibrationError(f"{bad} of {values.size} calibration scores are not finite")
    return np.sort(values)


def p_values(calibration: np.ndarray, scores: Any) -> np.ndarray:
    """``(1 + #{c ≥ s}) / (n + 1)`` per score; non-finite scores get ``1 / (n + 1)``.

    ``calibration`` must be sorted ascending (``sorted_scores``).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = calibration.size
    at_least = n - np.searchsorted(calibration, s, side="left")
    p = (1.0 + at_least) / (n + 1.0)
    p[~np.isfinite(s)] = 1.0 / (n + 1.0)
    return p


def flag_at_fpr(p: np.ndarray, fpr: float) -> np.ndarray:
    """``p ≤ fpr`` (with a rounding slack): the verdict at false-alarm rate ``fpr``."""
    return np.asarray(p) <= fpr * (1 + _SLACK)


def score_cut(calibration: np.ndarray, fpr: float) -> float:
    """The score ``t`` with ``p(s) ≤ fpr ⇔ s > t`` for finite ``s``.

    With ``k = ⌊fpr (n + 1)⌋ − 1`` scores allowed at or above ``s``, ``t`` is the ``(n − k)``-th
    smallest calibration score (``−∞`` when ``k ≥ n``). ``CalibrationError`` if ``fpr`` is below
    ``1 / (n + 1)``.
    """
    n = calibration.size
    if not certifiable(fpr, n):
        raise CalibrationError(f"fpr {fpr:g} is below 1/(n+1) = {min_fpr(n):.3g} for n = {n}")
    k = math.floor(fpr * (n + 1) * (1 + _SLACK)) - 1
    return -math.inf if k >= n else float(calibration[n - 1 - k])


def benjamini_hochberg(p: Any, q: float) -> np.ndarray:
    """Rejections of the Benjamini–Hochberg step-up procedure at level ``q``.

    Reject the ``k*`` smallest p-values, ``k* = max{k : p_(k) ≤ k q / m}``. With conformal
    p-values of one calibration set the test points are PRDS, so the false-discovery rate is at
    most ``q · m₀ / m`` (Bates et al., 2023, Theorem 3).
    """
    values = np.asarray(p, dtype=np.float64).reshape(-1)
    m = values.size
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(values, kind="stable")
    below = values[order] <= q * np.arange(1, m + 1) / m * (1 + _SLACK)
    reject = np.zeros(m, dtype=bool)
    if below.any():
        k = int(np.nonzero(below)[0].max()) + 1
        reject[order[:k]] = True
    return reject


def default_fpr_for(n: int, wanted: float = DEFAULT_FPR) -> float:
    """``wanted`` if ``n`` scores certify it, else the smallest certifiable rate ``1 / (n + 1)``."""
    return wanted if certifiable(wanted, n) else min_fpr(n)


def calibration_file(scores: np.ndarray, map_max: np.ndarray | None = None) -> tuple[str, bytes]:
    """``(file name, bytes)`` of a bundle's calibration file: ``{"n": n, "scores": [sorted]}``.

    Image bundles add ``"map_max"``: the sorted maxima of the returned ``anomaly_map`` of the same
    ``n`` calibration images, from which ``map=mask`` is cut (``map_cut``). The name carries the
    first 12 hex digits of the content's sha256, so a recalibrated bundle writes a new file next
    to the old one and switches by replacing ``manifest.json`` alone.
    """
    document: dict[str, Any] = {"n": int(scores.size), "scores": scores.tolist()}
    if map_max is not None:
        if map_max.size != scores.size:
            raise CalibrationError(f"{map_max.size} map maxima for {scores.size} calibration scores")
        document["map_max"] = map_max.tolist()
    data = orjson.dumps(document)
    return f"calibration-{hashlib.sha256(data).hexdigest()[:12]}.json", data


def _sorted_column(document: Any, key: str, n: int) -> np.ndarray:
    """``document[key]`` as ``n`` sorted finite floats; ``CalibrationError`` otherwise."""
    try:
        values = np.asarray(document[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise CalibrationError(f"calibration file has no valid {key!r} ({error!r})") from error
    if values.ndim != 1 or values.size != n or document.get("n") != n:
        raise CalibrationError(f"calibration file holds {values.size} {key}, the manifest says n = {n}")
    if not np.isfinite(values).all() or np.any(np.diff(values) < 0):
        raise CalibrationError(f"calibration {key} must be finite and sorted ascending")
    return values


def _document(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise CalibrationError(f"calibration file is malformed ({error})") from error


def read_calibration_file(data: bytes, n: int) -> np.ndarray:
    """Parse a calibration file; ``CalibrationError`` unless it holds ``n`` sorted finite scores."""
    return _sorted_column(_document(data), "scores", n)


def read_map_maxima(data: bytes, n: int) -> np.ndarray:
    """The ``n`` sorted anomaly-map maxima of a calibration file (``CalibrationError`` if absent)."""
    return _sorted_column(_document(data), "map_max", n)


def map_maxima(anomaly_maps: Any) -> np.ndarray:
    """Per image, the maximum over the pixels of its returned map ``[N, …]`` (NaN if any is NaN)."""
    maps = np.asarray(anomaly_maps, dtype=np.float64)
    return maps.reshape(maps.shape[0], -1).max(axis=1) if maps.shape[0] else np.zeros(0)


def map_cut(map_max: np.ndarray, fpr: float) -> float:
    """The cut ``t`` of ``map=mask`` at family-wise rate ``fpr`` (``score_cut`` of the maxima).

    The mask ``{pixels : map > t}`` of an image is non-empty exactly when its map maximum ``m``
    exceeds ``t``, i.e. when ``m``'s conformal p-value against the calibration maxima is
    ``<= fpr``; for a good image exchangeable with the calibration images that happens with
    probability at most ``fpr`` (a max-statistic over the image's pixels, docs/calibration.md).
    """
    return score_cut(map_max, fpr)


def calibration_section(
    scores: np.ndarray,
    file_name: str,
    data: dict[str, Any],
    method: str,
    created: str,
    analytic: dict[str, Any] | None = None,
    default_fpr: float = DEFAULT_FPR,
    map_max: np.ndarray | None = None,
) -> dict[str, Any]:
    """The manifest's ``calibration`` entry (docs/calibration.md); ``mask`` when maxima are stored."""
    n = int(scores.size)
    section = {
        "file": file_name,
        "n": n,
        "method": method,
        "p_value": "(1 + #{calibration scores >= score}) / (n + 1)",
        "default_fpr": default_fpr_for(n, default_fpr),
        "min_fpr": min_fpr(n),
        "data": data,
        "analytic": analytic,
        "created": created,
    }
    if map_max is not None:
        section["mask"] = {
            "statistic": MASK_STATISTIC,
            "rate": "map=mask at fpr: P(a good image shows any mask pixel) <= fpr (family-wise)",
            "cut": "score_cut of the n sorted map_max of the calibration file",
        }
    return section


def conformal_threshold(scores: np.ndarray, fpr: float, n: int) -> dict[str, Any]:
    """The manifest's ``threshold`` for a calibrated bundle: the score cut at ``fpr``."""
    cut = score_cut(scores, fpr)
    return {
        "score": cut,
        "method": f"conformal: scores above it have p_value <= {fpr:g} (n = {n} held-out normal samples)",
        "fpr": fpr,
    }
