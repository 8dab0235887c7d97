"""Drift gauges: per model, the share of recently answered inputs with ``p_value <= level``.

On a stable line the conformal p-values of normal inputs are uniform, so the shares sit near
the levels (1 %, 5 %); a lasting rise means the data moved away from the calibration data (or
the defect rate rose). The window is the last ``DRIFT_WINDOW`` answered rows / images per model
and API process.

The counts at each level are kept up to date as values enter and leave the window, so a
request costs a few additions, not a mean over the window (py-spy: ``np.mean`` over 1000
values at two levels per one-row request was 10% of the embedded API's CPU under load).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from prometheus_client import Gauge

from service.calibration import DRIFT_LEVELS

DRIFT_WINDOW = 1000


class _Window:
    """One model's ring buffer, how many of its values are at or below each level, and its gauges."""

    def __init__(self, size: int, gauges: list[Any]) -> None:
        self.values = np.empty(size)
        self.next = 0
        self.count = 0
        self.below = [0] * len(DRIFT_LEVELS)  # values in the window <= DRIFT_LEVELS[i]
        self.gauges = gauges


class DriftMonitor:
    """A ring buffer of the last ``window`` p-values per model, feeding ``usfad_p_value_share``."""

    def __init__(self, gauge: Gauge, window: int = DRIFT_WINDOW) -> None:
        self.gauge = gauge
        self.window = window
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, p_value: np.ndarray) -> None:
        """Add a request's p-values and update the model's gauges."""
        values = np.asarray(p_value, dtype=np.float64).reshape(-1)[-self.window :]
        if values.size == 0:
            return
        with self._lock:
            state = self._windows.get(model)
            if state is None:
                gauges = [self.gauge.labels(model, f"{level:g}") for level in DRIFT_LEVELS]
                state = self._windows[model] = _Window(self.window, gauges)
            if values.size == 1:
                self._add_one(state, float(values[0]))
            else:
                self._add_many(state, values)
            for gauge, below in zip(state.gauges, state.below, strict=True):
                gauge.set(below / state.count)

    def _add_one(self, state: _Window, value: float) -> None:
        old = float(state.values[state.next]) if state.count == self.window else None
        state.values[state.next] = value
        state.next = (state.next + 1) % self.window
        state.count = min(self.window, state.count + 1)
        for index, level in enumerate(DRIFT_LEVELS):
            state.below[index] += (value <= level) - (old is not None and old <= level)

    def _add_many(self, state: _Window, values: np.ndarray) -> None:
        # The filled positions are always 0 … count-1 (the buffer fills from 0), and the
        # positions of one call are distinct (at most ``window`` values).
        index = (state.next + np.arange(values.size)) % self.window
        old = state.values[index[index < state.count]]
        state.values[index] = values
        state.next = int(index[-1] + 1) % self.window
        state.count = min(self.window, state.count + values.size)
        for position, level in enumerate(DRIFT_LEVELS):
            state.below[position] += int(np.count_nonzero(values <= level)) - int(
                np.count_nonzero(old <= level)
            )
