"""How a request's ``is_anomaly`` is decided: a raw ``threshold``, a false-alarm rate ``fpr``, or ``fdr``.

- ``threshold=t``: ``is_anomaly = not (score <= t)`` (a non-finite score is never normal);
- ``fpr=α`` (default: the bundle's ``calibration.default_fpr``): ``is_anomaly = p_value <= α``;
  an ``α < 1 / (n + 1)`` cannot be certified by ``n`` calibration scores and is refused (422,
  naming the ``n`` it would need) rather than answered with an uncertified promise;
- ``fdr=q``: the rows / images of this request are flagged by Benjamini–Hochberg at ``q``.

At most one of the three may be given. Uncalibrated bundles (exported before calibration
existed) decide by the manifest's threshold and refuse ``fpr`` / ``fdr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.calibration import benjamini_hochberg, certifiable, flag_at_fpr, min_fpr, required_n
from service.errors import InputError


@dataclass(frozen=True)
class Rule:
    """What the request asked for (each ``None`` when not given)."""

    threshold: float | None = None
    fpr: float | None = None
    fdr: float | None = None


@dataclass(frozen=True)
class Verdict:
    """Flags per input and the rule that produced them (for the response)."""

    flags: np.ndarray
    threshold: float | None  # the score cut, when the verdict is one (threshold / default fpr)
    fpr: float | None
    fdr: float | None
    calibration_n: int | None


def check_rule(rule: Rule, calibration_n: int | None, model: str) -> None:
    """422 (``InputError`` naming the field) for a rule this model's calibration cannot honour."""
    given = [name for name in ("threshold", "fpr", "fdr") if getattr(rule, name) is not None]
    if len(given) > 1:
        raise InputError(given[1], f"{' and '.join(given)} are mutually exclusive: give at most one")
    for name in ("fpr", "fdr"):
        value = getattr(rule, name)
        if value is not None and not 0 < value < 1:
            raise InputError(name, f"must lie strictly between 0 and 1, got {value!r}")
        if value is not None and calibration_n is None:
            raise InputError(
                name,
                f"model {model!r} has no calibration (exported before p-values existed); "
                "recalibrate it with `usfad calibrate` or use `threshold`",
            )
    if rule.fpr is not None and calibration_n is not None and not certifiable(rule.fpr, calibration_n):
        raise InputError(
            "fpr",
            f"fpr {rule.fpr:g} cannot be certified: model {model!r} has n = {calibration_n} calibration "
            f"samples, so its smallest p-value is 1/(n+1) = {min_fpr(calibration_n):.3g}; "
            f"fpr {rule.fpr:g} needs n >= {required_n(rule.fpr)} (recalibrate with `usfad calibrate`)",
        )


def decide(
    rule: Rule,
    scores: np.ndarray,
    p_value: np.ndarray | None,
    manifest_threshold: float,
    calibration_n: int | None,
    default_fpr: float | None,
    model: str,
) -> Verdict:
    """Flags of one request's inputs; ``InputError`` when the served version cannot honour ``rule``."""
    scores = np.asarray(scores, dtype=np.float64)
    if p_value is None:
        calibration_n = None
    check_rule(rule, calibration_n, model)
    if rule.threshold is not None or p_value is None:
        cut = rule.threshold if rule.threshold is not None else manifest_threshold
        return Verdict(~(scores <= cut), cut, None, None, calibration_n)
    if rule.fdr is not None:
        return Verdict(benjamini_hochberg(p_value, rule.fdr), None, None, rule.fdr, calibration_n)
    fpr = rule.fpr if rule.fpr is not None else float(default_fpr)  # type: ignore[arg-type]
    # At the default rate the manifest's threshold is that rate's score cut (written by export).
    cut = manifest_threshold if rule.fpr is None else None
    return Verdict(flag_at_fpr(p_value, fpr), cut, fpr, None, calibration_n)
