"""One ``FamilySpec`` per tabular model family: its architecture, optimisation defaults and recipe.

A spec's ``architecture`` gives ``run.json["config"]`` (what ``models.factory.build_detector``
needs), ``training`` the optimisation settings, ``recipe`` the training stages on
standardised normal rows (with :func:`training.loop.fit`). Scoring is the detector's own
``score`` and export the generic ``StandardizedTabularScorer``, the same for every family
(``models.tabular.detector.TabularDetector``). Names come from ``models.families``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import nn

from models.factory import build_detector
from models.families import TABULAR_FAMILIES
from models.tabular.deep_svdd import BiasFreeMLP
from models.tabular.dohsc import OrthogonalProjectionEncoder, init_normal
from training.loop import FitConfig, FitResult, Optimisation, fit


@dataclass
class TrainingSettings(Optimisation):
    """Optimisation settings of a tabular run: the shared :class:`Optimisation` plus pretraining."""

    pretrain_epochs: int = 10  # autoencoder pretraining (Deep SVDD, DOHSC, DO2HSC)
    pretrain_lr: float | None = None  # learning rate of the pretraining (None: ``lr``)
    warmup_epochs: int = 20  # DO2HSC: DOHSC epochs before the radii are fixed (at most ``epochs``)

    def fit_config(
        self,
        seed: int,
        epochs: int | None = None,
        weight_decay: float | None = None,
        lr: float | None = None,
    ) -> FitConfig:
        """The :class:`FitConfig` for one training stage (``None``: this stage keeps the setting)."""
        changed = {"epochs": epochs, "weight_decay": weight_decay, "lr": lr}
        return FitConfig.from_settings(self, seed=seed, **{k: v for k, v in changed.items() if v is not None})


TRAINING_KEYS = {f.name for f in fields(TrainingSettings)}

_FLOW_ARCHITECTURE: dict[str, Any] = {
    "n_blocks": 4,
    "hidden": [256, 256, 256, 256],
    "mask": "alternating",
    "clamp": 2.0,
    "base": "svdd",
    "center": 0.0,
    "fixed_inner_diag": False,
    "prior_sigma": None,
}


def _flow_architecture(features: int, seed: int) -> dict[str, Any]:
    return {"features": features, **_FLOW_ARCHITECTURE, "seed": seed}


def _oneflow_architecture(features: int, seed: int) -> dict[str, Any]:
    return {"features": features, **_FLOW_ARCHITECTURE, "quantile": 0.05, "seed": seed}


def _deep_svdd_architecture(features: int, seed: int) -> dict[str, Any]:
    return {"features": features, "widths": [128, 64, 32]}


def _hypersphere_architecture(features: int, seed: int) -> dict[str, Any]:
    return {"features": features, "widths": [500, 30, 30], "nu": 0.05}


def _vae_flow_architecture(features: int, seed: int) -> dict[str, Any]:
    latent = min(16, max(2, features // 2))
    return {
        "features": features,
        **_FLOW_ARCHITECTURE,
        "latent_dim": latent,
        "vae_hidden": [256, 128],
        "sigma_min": 0.5,
        "seed": seed,
    }


def resolve(
    family: str, features: int, seed: int, overrides: dict[str, Any] | None
) -> tuple[dict[str, Any], TrainingSettings]:
    """Defaults of ``family`` with ``overrides`` applied (keys of either the config or training)."""
    config = default_config(family, features, seed)
    settings = default_training(family)
    for key, value in (overrides or {}).items():
        if key in TRAINING_KEYS:
            setattr(settings, key, value)
        elif key in config and key != "features":
            config[key] = value
        else:
            allowed = sorted((set(config) - {"features"}) | TRAINING_KEYS)
            raise ValueError(f"unknown override {key!r} for model {family!r}; allowed: {', '.join(allowed)}")
    return config, settings


@dataclass
class FitOutcome:
    """A trained detector with what happened during its (final) training stage."""

    detector: nn.Module
    result: FitResult


def _merge(pretrain: FitResult, main: FitResult) -> FitResult:
    """Report the main stage, but a failed pretraining fails the whole run."""
    if pretrain.failed:
        return pretrain
    main.seconds += pretrain.seconds
    return main


def _pretrain_autoencoder(
    encoder: nn.Module, widths: list[int], x: torch.Tensor, settings: TrainingSettings, seed: int
) -> FitResult:
    """Fit ``decoder ∘ encoder`` on the mean squared reconstruction error (bias-free decoder)."""
    decoder = BiasFreeMLP(list(reversed(widths)))
    autoencoder = nn.Sequential(encoder, decoder)
    config = settings.fit_config(seed, epochs=settings.pretrain_epochs, weight_decay=settings.weight_decay)
    return fit(autoencoder, x, lambda model, batch: (model(batch) - batch).pow(2).sum(1).mean(), config)


def _pretrain_projected_autoencoder(
    encoder: OrthogonalProjectionEncoder, x: torch.Tensor, settings: TrainingSettings, seed: int
) -> FitResult:
    """DOHSC's pretraining: a bias-free linear decoder on the (batch-whitened) projected codes."""
    code_dim = encoder.projection.shape[0]
    decoder = init_normal(nn.Linear(code_dim, x.shape[1], bias=False))
    autoencoder = nn.Sequential(encoder, decoder)
    config = settings.fit_config(
        seed, epochs=settings.pretrain_epochs, weight_decay=settings.weight_decay, lr=settings.pretrain_lr
    )
    return fit(autoencoder, x, lambda model, batch: (model(batch) - batch).pow(2).sum(1).mean(), config)


# (fresh detector, standardised rows, config, settings, seed) -> what the final stage did
Recipe = Callable[[nn.Module, torch.Tensor, dict[str, Any], TrainingSettings, int], FitResult]


def _fit_flow(
    detector: nn.Module, x: torch.Tensor, config: dict, settings: TrainingSettings, seed: int
) -> FitResult:
    """MAP training of a flow: the log-prior is scaled by the training-set size."""
    n_train = x.shape[0]
    return fit(detector, x, lambda m, b: m.loss(b, n_train), settings.fit_config(seed))


def _fit_loss(
    detector: nn.Module, x: torch.Tensor, config: dict, settings: TrainingSettings, seed: int
) -> FitResult:
    """One stage on the detector's own ``loss`` (OneFlow, the VAE hybrids)."""
    return fit(detector, x, lambda m, b: m.loss(b), settings.fit_config(seed))


def _fit_deep_svdd(
    detector: nn.Module, x: torch.Tensor, config: dict, settings: TrainingSettings, seed: int
) -> FitResult:
    """Autoencoder pretraining, ``c`` = mean code, then the one-class loss."""
    widths = [int(config["features"]), *config["widths"]]
    pretrain = _pretrain_autoencoder(detector.encoder, widths, x, settings, seed)
    with torch.no_grad():
        detector.set_center(detector.encoder(x))
    main = fit(detector, x, lambda m, b: m.loss(b), settings.fit_config(seed))
    return _merge(pretrain, main)


def _fit_hypersphere(
    detector: nn.Module,
    x: torch.Tensor,
    config: dict,
    settings: TrainingSettings,
    seed: int,
    two_shells: bool = False,
) -> FitResult:
    """DOHSC / DO2HSC: projected-autoencoder pretraining, (DO2HSC: DOHSC warm-up), then the loss."""
    pretrain = _pretrain_projected_autoencoder(detector.encoder, x, settings, seed)
    detector.initialise(x)  # c from the pretrained encoder, fixed from here on
    if two_shells:
        # As in the original: DOHSC epochs first, then the shell radii from the training
        # distances, fixed for the shell stage and for scoring.
        warmup_config = settings.fit_config(seed, epochs=min(settings.warmup_epochs, settings.epochs))
        warmup = fit(detector, x, lambda m, b: m.dohsc_loss(b), warmup_config)
        pretrain = _merge(pretrain, warmup)
        detector.encoder.freeze_projection(x)
        detector.set_radii(x)
    main = fit(detector, x, lambda m, b: m.loss(b), settings.fit_config(seed))
    # Scoring uses the training-set projection of the final encoder.
    detector.eval()
    detector.encoder.freeze_projection(x)
    if not two_shells:
        detector.set_radii(x)
    return _merge(pretrain, main)


_fit_do2hsc = partial(_fit_hypersphere, two_shells=True)


@dataclass(frozen=True)
class FamilySpec:
    """Everything training needs to know about one tabular family."""

    name: str
    architecture: Callable[[int, int], dict[str, Any]]  # (features, seed) -> run.json "config"
    recipe: Recipe
    training: Callable[[], TrainingSettings] = TrainingSettings


def _svdd_training() -> TrainingSettings:
    return TrainingSettings(weight_decay=1e-6)


def _hypersphere_training() -> TrainingSettings:
    # DOHSC / DO2HSC: weight decay 1e-6 and the pretraining rate 1e-3 of the original code.
    return TrainingSettings(weight_decay=1e-6, pretrain_lr=1e-3)


SPECS: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec("usflow", _flow_architecture, _fit_flow),
        FamilySpec("nonusflow", _flow_architecture, _fit_flow),
        FamilySpec("deep_svdd", _deep_svdd_architecture, _fit_deep_svdd, _svdd_training),
        FamilySpec("oneflow", _oneflow_architecture, _fit_loss),
        FamilySpec("dohsc", _hypersphere_architecture, _fit_hypersphere, _hypersphere_training),
        FamilySpec("do2hsc", _hypersphere_architecture, _fit_do2hsc, _hypersphere_training),
        FamilySpec("vae_usflow", _vae_flow_architecture, _fit_loss),
        FamilySpec("vae_nonusflow", _vae_flow_architecture, _fit_loss),
    )
}


def spec(family: str) -> FamilySpec:
    """The spec of ``family``; ``ValueError`` naming the known families otherwise."""
    if family not in SPECS:
        raise ValueError(f"unknown tabular model {family!r}; expected one of {', '.join(TABULAR_FAMILIES)}")
    return SPECS[family]


def default_config(family: str, features: int, seed: int = 0) -> dict[str, Any]:
    """Architecture of ``family`` for ``features`` inputs (everything ``build_detector`` needs)."""
    return spec(family).architecture(features, seed)


def default_training(family: str) -> TrainingSettings:
    """Optimisation settings of ``family`` (paper values; Deep SVDD, DOHSC, DO2HSC add weight decay)."""
    return spec(family).training()


def fit_detector(
    family: str, x: torch.Tensor, config: dict[str, Any], settings: TrainingSettings, seed: int
) -> FitOutcome:
    """Train a fresh ``family`` detector on standardised normal rows ``x`` (float32)."""
    recipe = spec(family).recipe
    torch.manual_seed(seed)
    detector = build_detector(family, config)
    result = recipe(detector, x, config, settings, seed)
    detector.eval()
    return FitOutcome(detector, result)


@torch.no_grad()
def score_rows(
    detector: nn.Module, x: torch.Tensor, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, nll)`` of standardised rows, in eval mode, batch by batch."""
    detector.eval()
    scores, nlls = [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]
        score, nll = detector.score(batch)
        scores.append(score)
        nlls.append(nll)
    return torch.cat(scores), torch.cat(nlls)
