"""The experiment's whole configuration in one place: sample sizes, training budget and search space.

``AlignmentConfig`` is written to ``OUT/config.json`` so a run can be repeated exactly; every
random choice (data, trial configurations, initialisation, batching) derives from ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

MODEL_NAMES: tuple[str, ...] = ("DeepSVDD", "NonUSFlow", "USFlow")
FLOW_NAMES: tuple[str, ...] = ("NonUSFlow", "USFlow")


@dataclass(frozen=True)
class SearchSpace:
    """Random-search ranges (inclusive) and choices, shared by all dimensions.

    Flows: ``n_blocks`` coupling blocks, conditioners with ``conditioner_layers`` hidden layers of
    width ``hidden_factor · max(d, min_hidden_width)``. Deep SVDD: encoder ``depth`` (number of
    widths) on the schedule ``[d, 2^{k-2} d, …, 2d, d]`` and an L2 weight decay ``λ``.
    """

    learning_rates: tuple[float, ...] = (5e-4, 1e-3, 3e-3)
    batch_sizes: tuple[int, ...] = (128, 256, 512)
    flow_blocks: tuple[int, int] = (2, 10)
    conditioner_layers: tuple[int, int] = (2, 3)
    hidden_factors: tuple[int, ...] = (1, 2)
    min_hidden_width: int = 32
    affine_clamp: float = 2.0
    svdd_depth: tuple[int, int] = (2, 6)
    svdd_weight_decays: tuple[float, ...] = (0.0, 1e-6, 1e-4)


@dataclass(frozen=True)
class AlignmentConfig:
    """One run of the experiment.

    ``n_train`` samples for training, ``n_val`` for model selection (validation loss only) and
    ``n_test`` held-out samples on which every rank statistic is computed.
    """

    dims: tuple[int, ...] = (2, 8, 32, 128)
    models: tuple[str, ...] = MODEL_NAMES
    configs_per_model: int = 10
    n_train: int = 20000
    n_val: int = 2500
    n_test: int = 2500
    epochs: int = 60
    patience: int = 5
    seconds_per_run: float | None = 36.0
    seed: int = 0
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        for name in ("configs_per_model", "n_train", "n_val", "n_test", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_test < 3 or self.n_val < 2:
            raise ValueError("n_test must be at least 3 and n_val at least 2")
        if not self.dims:
            raise ValueError("dims must name at least one dimension")
        for dim in self.dims:
            if dim < 2 or dim % 2 != 0:
                raise ValueError(f"dims must be even integers >= 2 (half the variances are 5.0), got {dim}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(f"models must be a non-empty subset of {MODEL_NAMES}, got {self.models}")
        if self.seconds_per_run is not None and self.seconds_per_run <= 0:
            raise ValueError(f"seconds_per_run must be positive, got {self.seconds_per_run}")

    def run_seconds(self, dim: int) -> float | None:
        """Time cap of one trial in dimension ``d``: ``seconds_per_run · (1 + log₂ d) / 8``.

        The full cap applies at ``d = 128``; ``d = 2`` gets a quarter of it (its models are
        small and converge in fewer samples).
        """
        if self.seconds_per_run is None:
            return None
        return self.seconds_per_run * (1 + math.log2(dim)) / 8

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AlignmentConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        space = SearchSpace(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("space").items()}
        )
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(space=space, **fields)
