"""Do two implementations of a scorer give the same outputs? (eager vs TorchScript vs ONNX)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Tolerances of the parity tests on real data: scores (and NLL) ≤ 1e-4, anomaly maps ≤ 1e-3.
SCORE_TOLERANCE = 1e-4
MAP_TOLERANCE = 1e-3
# The export-time check on random probes allows 10× that: it must catch structural mistakes
# (pre-processing outside the graph, batch-size specialisation: errors of 1e-2 and more), not
# refuse a model whose float32 round-off is amplified by an ill-conditioned layer.
EXPORT_CHECK_SLACK = 10.0


def max_relative_difference(
    candidate: np.ndarray, reference: np.ndarray, floor: float | None = None
) -> float:
    """``max_i |a_i − b_i| / max(|b_i|, δ)`` with ``δ = floor`` or ``1e-6 · max(1, max_j |b_j|)``.

    ``δ`` keeps entries that are (almost) zero from dividing by zero. Pass ``floor`` (e.g. the
    typical magnitude of the output, :func:`typical_magnitude`) for signed scores such as
    ``d² − R²`` that cross zero, where an element-wise relative error is meaningless. NaN in the
    same places counts as equal (models without a likelihood report NaN NLL); NaN anywhere
    else, or a shape mismatch, gives ``inf``.
    """
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return float("inf")
    finite = ~nan_b
    if not finite.any():
        return 0.0
    a, b = a[finite], b[finite]
    delta = floor if floor is not None else 1e-6 * max(1.0, float(np.abs(b).max()))
    return float((np.abs(a - b) / np.maximum(np.abs(b), delta)).max())


def typical_magnitude(values: np.ndarray) -> float | None:
    """Median ``|value|`` over the finite entries (``None`` when there are none)."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else None


def tolerance_for(output_name: str, slack: float = 1.0) -> float:
    """The allowed max relative difference of one named output, times ``slack``."""
    return slack * (MAP_TOLERANCE if output_name == "anomaly_map" else SCORE_TOLERANCE)


def compare_outputs(
    candidate: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    names: Sequence[str],
    floors: Mapping[str, float | None] | None = None,
) -> dict[str, float]:
    """Max relative difference per named output (``floors``: optional ``δ`` per output)."""
    if len(candidate) != len(reference) or len(reference) != len(names):
        raise ValueError(f"expected {len(names)} outputs, got {len(candidate)} and {len(reference)}")
    floors = floors or {}
    return {
        name: max_relative_difference(a, b, floors.get(name))
        for name, a, b in zip(names, candidate, reference, strict=True)
    }


def parity_failures(differences: Mapping[str, float], slack: float = 1.0) -> list[str]:
    """Human-readable lines for every output over its tolerance (empty when all agree)."""
    return [
        f"{name}: max relative difference {value:.3g} > {tolerance_for(name, slack):g}"
        for name, value in differences.items()
        if not value <= tolerance_for(name, slack)
    ]
