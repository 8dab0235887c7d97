"""Side-by-side throughput measurement of several runners on the same inputs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np

Runner = Callable[[np.ndarray], object]
MIN_CALLS = 3


def interleaved_rates(
    runners: Mapping[str, Runner], batch: np.ndarray, seconds: float, turn_seconds: float = 0.05
) -> dict[str, float]:
    """Rows/s of each runner, taking turns (A B C A B C …) for about ``seconds`` in all.

    In each turn a runner is called back to back for ``turn_seconds`` (at least once), so it
    runs with warm caches as in steady serving, while short turns let every runner see the
    same mix of quiet and busy moments of a shared machine. Every runner gets at least
    :data:`MIN_CALLS` calls.
    """
    spent = dict.fromkeys(runners, 0.0)
    calls = dict.fromkeys(runners, 0)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or min(calls.values()) < MIN_CALLS:
        for name, runner in runners.items():
            began = time.perf_counter()
            while True:
                runner(batch)
                calls[name] += 1
                elapsed = time.perf_counter() - began
                if elapsed >= turn_seconds:
                    break
            spent[name] += elapsed
    return {name: calls[name] * batch.shape[0] / spent[name] for name in runners}


def compare_throughput(
    runners: Mapping[str, Runner], batch: np.ndarray, seconds: float, rounds: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Rows/s of each runner in each of ``rounds`` rounds of interleaved calls (``seconds`` in all).

    Compare runners with :func:`median_ratio` (ratios of the same round).
    """
    for runner in runners.values():
        for _ in range(warmup):
            runner(batch)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(max(1, rounds)):
        for name, rate in interleaved_rates(runners, batch, seconds / max(1, rounds)).items():
            samples[name].append(rate)
    return samples


def median_rate(samples: list[float]) -> float:
    """Median rows/s over rounds."""
    return statistics.median(samples)


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator / denominator`` (ratios of the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
