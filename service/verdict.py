"""The verdict promise: a score that could not be computed is never read as "normal".

An input far outside the training data can overflow float32 inside the flow (a row of
``3e38``: finite as input, ``NaN`` or ``±inf`` after the first layers). ``NaN > threshold`` is
false, so a plain comparison would answer ``is_anomaly: false``. Here a result whose score
(or, for images, any value of its anomaly map) is not finite is *overflowed*: the answer then
has ``score: null``, ``is_anomaly: true`` and ``reason: "score_not_finite"``, for every model
family and for images (docs/reliability.md). ``nll`` is not part of the verdict: models
without a likelihood (OneFlow, DeepSVDD, DOHSC, the VAE flows) report it as ``NaN``.
"""

from __future__ import annotations

import numpy as np

OVERFLOW_REASON = "score_not_finite"


def overflowed(score: np.ndarray, anomaly_map: np.ndarray | None = None) -> np.ndarray:
    """Bool ``[N]``: the score, or any value of the input's anomaly map, is NaN or ±inf."""
    bad = ~np.isfinite(np.asarray(score, dtype=np.float64).reshape(-1))
    if anomaly_map is not None and len(bad):
        bad |= ~np.isfinite(np.asarray(anomaly_map).reshape(len(bad), -1)).all(axis=1)
    return bad


def is_anomaly(score: np.ndarray, threshold: float, overflow: np.ndarray | None = None) -> np.ndarray:
    """Bool ``[N]``: ``score > threshold`` (in float64), or the computation overflowed."""
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    flags = ~np.isfinite(score) | (score > threshold)
    return flags | overflow if overflow is not None else flags
