"""Drift gauges: per model, the share of recently answered inputs with ``p_value <= level``.

On a stable line the conformal p-values of normal inputs are uniform, so the shares sit near
the levels (1 %, 5 %); a lasting rise means the data moved away from the calibration data (or
the defect rate rose). The window is the last ``DRIFT_WINDOW`` answered rows / images per model
and API process.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import Gauge

from service.calibration import DRIFT_LEVELS

DRIFT_WINDOW = 1000


class DriftMonitor:
    """A ring buffer of the last ``window`` p-values per model, feeding ``usfad_p_value_share``."""

    def __init__(self, gauge: Gauge, window: int = DRIFT_WINDOW) -> None:
        self.gauge = gauge
        self.window = window
        self._buffers: dict[str, tuple[np.ndarray, list[int]]] = {}  # model -> (values, [next, count])
        self._lock = threading.Lock()

    def observe(self, model: str, p_value: np.ndarray) -> None:
        """Add a request's p-values and update the model's gauges."""
        values = np.asarray(p_value, dtype=np.float64).reshape(-1)[-self.window :]
        if values.size == 0:
            return
        with self._lock:
            buffer, state = self._buffers.setdefault(model, (np.empty(self.window), [0, 0]))
            start = state[0]
            index = (start + np.arange(values.size)) % self.window
            buffer[index] = values
            state[0] = (start + values.size) % self.window
            state[1] = min(self.window, state[1] + values.size)
            recent = buffer[: state[1]]
            for level in DRIFT_LEVELS:
                self.gauge.labels(model, f"{level:g}").set(float(np.mean(recent <= level)))
