"""Classical references from scikit-learn: k-NN distance (k = 5) and Isolation Forest."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

CLASSICAL_MODELS: tuple[str, ...] = ("knn", "iforest")
KNN_K = 5


def fit_classical(model: str, x_train: np.ndarray, seed: int) -> Any:
    """Fit ``knn`` (a neighbour index) or ``iforest`` (100 trees) on standardised normal rows."""
    if model == "knn":
        return NearestNeighbors(n_neighbors=min(KNN_K, len(x_train))).fit(x_train)
    if model == "iforest":
        return IsolationForest(n_estimators=100, random_state=seed).fit(x_train)
    raise ValueError(f"unknown classical model {model!r}; expected one of {CLASSICAL_MODELS}")


def score_classical(fitted: Any, x_test: np.ndarray) -> np.ndarray:
    """Anomaly scores (higher = more anomalous).

    - k-NN: distance to the ``k``-th nearest training row (``k = 5``, capped at the training size);
    - Isolation Forest: ``−score_samples`` (the negated normality score).
    """
    if isinstance(fitted, NearestNeighbors):
        distances, _ = fitted.kneighbors(x_test)
        return distances[:, -1]
    return -fitted.score_samples(x_test)
