"""Random search: draw trial configurations, build and train each model, pick the best by validation loss.

Models come from ``models.flows`` (USFlow / NonUSFlow) and ``models.tabular.deep_svdd``; training
uses ``training.loop.fit`` with early stopping on the validation loss. Inputs are standardised
(see ``preprocess``). Deep SVDD is trained without autoencoder pretraining: its centre ``c`` is
the mean initial code (Ruff et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from models.flows import CouplingFlow, NonUSFlow, USFlow
from models.tabular.deep_svdd import BiasFreeMLP, DeepSVDD
from training.experiments.alignment.space import MODEL_NAMES, AlignmentConfig, SearchSpace
from training.loop import FitConfig, evaluate_loss, fit


@dataclass(frozen=True)
class Trial:
    """One configuration of the random search; ``params`` holds the sampled hyper-parameters."""

    model: str
    dim: int
    index: int
    seed: int
    params: dict[str, float | int]


@dataclass
class TrialOutcome:
    """A trained trial: the model (``None`` if it failed) and what happened."""

    trial: Trial
    model: nn.Module | None
    val_loss: float
    epochs_run: int
    stop_reason: str
    failed: bool
    seconds: float


@dataclass
class SearchResult:
    """All outcomes of one (model, dimension) search and the selected one."""

    outcomes: list[TrialOutcome] = field(default_factory=list)

    @property
    def failed_runs(self) -> int:
        """Trials whose training diverged (non-finite loss)."""
        return sum(o.failed for o in self.outcomes)

    @property
    def best(self) -> TrialOutcome | None:
        """The trial with the lowest validation loss among those that did not fail."""
        valid = [o for o in self.outcomes if not o.failed]
        return min(valid, key=lambda o: o.val_loss) if valid else None


def svdd_widths(dim: int, depth: int) -> list[int]:
    """Encoder widths ``[d, 2^{k-2} d, …, 2d, d]`` for depth ``k`` (``k=2``: ``[d, d]``)."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    return [dim] + [dim * 2**j for j in range(depth - 2, -1, -1)]


def sample_trials(model: str, dim: int, config: AlignmentConfig) -> list[Trial]:
    """``config.configs_per_model`` configurations drawn uniformly from the search space."""
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; expected one of {MODEL_NAMES}")
    space: SearchSpace = config.space
    rng = np.random.default_rng([config.seed, dim, MODEL_NAMES.index(model)])
    trials = []
    for index in range(config.configs_per_model):
        params: dict[str, float | int] = {
            "lr": float(rng.choice(space.learning_rates)),
            "batch_size": int(rng.choice(space.batch_sizes)),
        }
        if model == "DeepSVDD":
            params["depth"] = int(rng.integers(space.svdd_depth[0], space.svdd_depth[1] + 1))
            params["weight_decay"] = float(rng.choice(space.svdd_weight_decays))
        else:
            params["n_blocks"] = int(rng.integers(space.flow_blocks[0], space.flow_blocks[1] + 1))
            params["conditioner_layers"] = int(
                rng.integers(space.conditioner_layers[0], space.conditioner_layers[1] + 1)
            )
            params["hidden_width"] = int(rng.choice(space.hidden_factors)) * max(dim, space.min_hidden_width)
        trials.append(Trial(model, dim, index, int(rng.integers(2**31)), params))
    return trials


def build_model(trial: Trial, space: SearchSpace) -> nn.Module:
    """The untrained network of ``trial`` (flows use the base ``N(0, ½I)``, Eq. 5 with ``c = 0``)."""
    torch.manual_seed(trial.seed)
    p = trial.params
    if trial.model == "DeepSVDD":
        return DeepSVDD(BiasFreeMLP(svdd_widths(trial.dim, int(p["depth"]))), trial.dim)
    hidden = (int(p["hidden_width"]),) * int(p["conditioner_layers"])
    common = {"n_blocks": int(p["n_blocks"]), "hidden": hidden, "base": "svdd", "center": 0.0}
    if trial.model == "USFlow":
        flow: CouplingFlow = USFlow((trial.dim,), seed=trial.seed, **common)
    else:
        flow = NonUSFlow((trial.dim,), seed=trial.seed, clamp=space.affine_clamp, **common)
    start_at_base_scale(flow)
    return flow


@torch.no_grad()
def start_at_base_scale(flow: CouplingFlow) -> None:
    """Scale the final LU map ``Q = L U`` to ``√v · Q`` (``v`` = base variance).

    At initialisation every coupling block is the identity, so ``φ = A_{n+1}``, a random
    rotation; after scaling, standardised inputs start with the base's variance. Without it a
    USF must learn its one global scale through the ``d`` diagonal entries of the final ``U``
    alone, which Adam moves by about one learning rate per step (hundreds of steps).
    """
    scale = math.sqrt(flow.base.variance)
    flow.final.upper.mul_(scale)
    flow.final.log_diag.add_(math.log(scale))


def _flow_nll(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model.nll(batch).mean()


def _one_class_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model.squared_distance(batch).mean()


def train_trial(
    trial: Trial, train: torch.Tensor, val: torch.Tensor, config: AlignmentConfig
) -> TrialOutcome:
    """Train one trial with :func:`training.loop.fit`; the selection criterion is its validation loss.

    Validation loss: mean NLL for flows, mean ``‖ω(x) - c‖²`` (one-class loss) for Deep SVDD.
    """
    model = build_model(trial, config.space)
    is_svdd = trial.model == "DeepSVDD"
    loss_fn = _one_class_loss if is_svdd else _flow_nll
    if is_svdd:
        with torch.no_grad():
            model.set_center(model.encoder(train))
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=int(trial.params["batch_size"]),
        lr=float(trial.params["lr"]),
        weight_decay=float(trial.params.get("weight_decay", 0.0)),
        patience=config.patience,
        seed=trial.seed,
        max_seconds=config.run_seconds(trial.dim),
        monitor="val",
    )
    result = fit(model, train, loss_fn, fit_config, val=val)
    val_loss = math.nan if result.failed else evaluate_loss(model, val, loss_fn)
    failed = result.failed or not math.isfinite(val_loss)
    stop_reason = (
        result.stop_reason if result.failed or math.isfinite(val_loss) else "non-finite validation loss"
    )
    return TrialOutcome(
        trial=trial,
        model=None if failed else model,
        val_loss=val_loss,
        epochs_run=result.epochs_run,
        stop_reason=stop_reason,
        failed=failed,
        seconds=result.seconds,
    )


def run_search(
    model: str,
    dim: int,
    train: torch.Tensor,
    val: torch.Tensor,
    config: AlignmentConfig,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SearchResult:
    """Train every sampled trial of ``model`` in dimension ``dim``; keeps only the best model in memory."""
    search = SearchResult()
    for trial in sample_trials(model, dim, config):
        outcome = train_trial(trial, train, val, config)
        if on_trial is not None:
            on_trial(outcome)
        best = search.best
        if best is not None and not outcome.failed and outcome.val_loss < best.val_loss:
            best.model = None  # free the previous best; only the selected model is evaluated
        elif best is not None and outcome.model is not None:
            outcome.model = None
        search.outcomes.append(outcome)
    return search
