"""What every tabular detector provides: ``loss`` to train, ``score`` to score (one protocol).

Training (``training/tabular/families.py``), ``score_rows`` and the exported
``StandardizedTabularScorer`` call only these two methods, so no caller asks which family
it holds. Image detectors follow the same shape on backbone features
(``models/image/detector.py``: ``loss(features)``, ``score(features)``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TabularDetector(Protocol):
    """``loss(x) -> scalar`` on a batch of standardised rows; ``score(x) -> (score [N], nll [N])``.

    ``score`` is the anomaly score (larger: more anomalous) and ``nll`` the negative
    log-likelihood in nats, NaN for detectors without a likelihood (Deep SVDD, DOHSC).
    """

    def loss(self, x: torch.Tensor) -> torch.Tensor: ...

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
