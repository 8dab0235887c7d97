"""Default configurations and training procedures of every tabular model family.

``default_config`` gives the architecture (stored as ``run.json["config"]``),
``default_training`` the optimisation settings; ``fit_detector`` trains a fresh detector on
standardised normal rows with :func:`training.loop.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from models.tabular.deep_svdd import BiasFreeMLP
from models.tabular.dohsc import OrthogonalProjectionEncoder, init_normal
from models.tabular.factory import TORCH_FAMILIES, build_detector
from training.loop import FitConfig, FitResult, fit


@dataclass
class TrainingSettings:
    """Optimisation settings (defaults: the paper's tabular flow setting)."""

    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-4
    patience: int = 5
    min_delta: float = 1e-4
    weight_decay: float = 0.0
    pretrain_epochs: int = 10  # autoencoder pretraining (Deep SVDD, DOHSC, DO2HSC)
    pretrain_lr: float | None = None  # learning rate of the pretraining (None: ``lr``)
    warmup_epochs: int = 20  # DO2HSC: DOHSC epochs before the radii are fixed (at most ``epochs``)
    max_seconds: float | None = None  # optional time budget per training stage

    def fit_config(
        self,
        seed: int,
        epochs: int | None = None,
        weight_decay: float | None = None,
        lr: float | None = None,
    ) -> FitConfig:
        """The :class:`FitConfig` for one training stage."""
        return FitConfig(
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            lr=self.lr if lr is None else lr,
            weight_decay=self.weight_decay if weight_decay is None else weight_decay,
            patience=self.patience,
            min_delta=self.min_delta,
            seed=seed,
            max_seconds=self.max_seconds,
        )


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


def default_config(family: str, features: int, seed: int = 0) -> dict[str, Any]:
    """Architecture of ``family`` for ``features`` inputs (everything ``build_detector`` needs)."""
    if family in ("usflow", "nonusflow"):
        return {"features": features, **_FLOW_ARCHITECTURE, "seed": seed}
    if family == "oneflow":
        return {"features": features, **_FLOW_ARCHITECTURE, "quantile": 0.05, "seed": seed}
    if family == "deep_svdd":
        return {"features": features, "widths": [128, 64, 32]}
    if family in ("dohsc", "do2hsc"):
        return {"features": features, "widths": [500, 30, 30], "nu": 0.05}
    if family in ("vae_usflow", "vae_nonusflow"):
        latent = min(16, max(2, features // 2))
        return {
            "features": features,
            **_FLOW_ARCHITECTURE,
            "latent_dim": latent,
            "vae_hidden": [256, 128],
            "sigma_min": 0.5,
            "seed": seed,
        }
    raise ValueError(f"unknown tabular model {family!r}; expected one of {', '.join(TORCH_FAMILIES)}")


def default_training(family: str) -> TrainingSettings:
    """Optimisation settings of ``family`` (paper values; Deep SVDD adds weight decay).

    DOHSC / DO2HSC take weight decay 1e-6 and the pretraining rate 1e-3 of the original code.
    """
    if family not in TORCH_FAMILIES:
        raise ValueError(f"unknown tabular model {family!r}; expected one of {', '.join(TORCH_FAMILIES)}")
    if family == "deep_svdd":
        return TrainingSettings(weight_decay=1e-6)
    if family in ("dohsc", "do2hsc"):
        return TrainingSettings(weight_decay=1e-6, pretrain_lr=1e-3)
    return TrainingSettings()


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


def fit_detector(
    family: str, x: torch.Tensor, config: dict[str, Any], settings: TrainingSettings, seed: int
) -> FitOutcome:
    """Train a fresh ``family`` detector on standardised normal rows ``x`` (float32)."""
    torch.manual_seed(seed)
    detector = build_detector(family, config)
    n_train = x.shape[0]
    if family in ("usflow", "nonusflow"):
        result = fit(detector, x, lambda m, b: m.loss(b, n_train), settings.fit_config(seed))
    elif family in ("oneflow", "vae_usflow", "vae_nonusflow"):
        result = fit(detector, x, lambda m, b: m.loss(b), settings.fit_config(seed))
    elif family == "deep_svdd":
        widths = [int(config["features"]), *config["widths"]]
        pretrain = _pretrain_autoencoder(detector.encoder, widths, x, settings, seed)
        with torch.no_grad():
            detector.set_center(detector.encoder(x))
        main = fit(detector, x, lambda m, b: m.squared_distance(b).mean(), settings.fit_config(seed))
        result = _merge(pretrain, main)
    elif family in ("dohsc", "do2hsc"):
        pretrain = _pretrain_projected_autoencoder(detector.encoder, x, settings, seed)
        detector.initialise(x)  # c from the pretrained encoder, fixed from here on
        if family == "do2hsc":
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
        if family == "dohsc":
            detector.set_radii(x)
        result = _merge(pretrain, main)
    else:
        raise ValueError(f"unknown tabular model {family!r}; expected one of {', '.join(TORCH_FAMILIES)}")
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
        score, nll = detector.score(batch) if hasattr(detector, "score") else detector(batch)
        scores.append(score)
        nlls.append(nll)
    return torch.cat(scores), torch.cat(nlls)
