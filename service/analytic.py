"""The χ² tail of flows with a Gaussian base: ``p_value_analytic`` (workers; needs scipy).

For a flow ``φ`` with base ``N(c, σ² I)`` in ``d`` dimensions, ``‖φ(x) − c‖² / σ² ~ χ²_d`` for
normal ``x`` when the flow fits; the USF base is ``N(c, ½ I)``, so ``2‖φ(x) − c‖² ~ χ²_d``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import chdtrc  # χ² survival function; scipy.special is far lighter than scipy.stats


def analytic_p_values(scores: Any, dof: int, scale: float) -> np.ndarray:
    """``P(χ²_dof ≥ scale · s²)``: the flow's own tail, for latent norms ``s = ‖φ(x) − c‖``.

    For a base ``N(c, σ² I)`` in ``dof`` dimensions, ``‖φ(x) − c‖² / σ² ~ χ²_dof`` when the flow
    fits, so ``scale = 1 / σ²`` (2 for the USF base ``N(c, ½ I)``). Non-finite scores get 0.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        p = chdtrc(dof, scale * np.square(s))
    p[~np.isfinite(s)] = 0.0
    return p


def chi2_ks(calibration: np.ndarray, dof: int, scale: float) -> dict[str, float]:
    """Kolmogorov–Smirnov distance of ``scale · c²`` (calibration scores) from ``χ²_dof``."""
    from scipy.stats import kstest  # export / calibrate / benchmarks only, never in the serving path

    result = kstest(scale * np.square(calibration), "chi2", args=(dof,))
    return {"ks_distance": float(result.statistic), "ks_pvalue": float(result.pvalue)}
