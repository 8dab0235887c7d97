"""Rebuild a tabular detector from its family name and ``config`` (the ``run.json`` contract).

Every detector returned here implements ``models.tabular.detector.TabularDetector``:
``loss(x)`` for training and ``score(x) -> (score [N], nll [N])`` on standardised rows, with
tensor operations only. ``models.factory.build_detector`` is the public entry point.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.families import TABULAR_FAMILIES
from models.flows import NonUSFlow, USFlow
from models.tabular.deep_svdd import BiasFreeMLP, DeepSVDD
from models.tabular.dohsc import DO2HSC, DOHSC, OrthogonalProjectionEncoder, hypersphere_encoder
from models.tabular.oneflow import OneFlow
from models.tabular.vae_flow import VAEFlow


def _flow_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_blocks": int(config["n_blocks"]),
        "hidden": tuple(int(h) for h in config["hidden"]),
        "mask": config.get("mask", "alternating"),
        "clamp": float(config.get("clamp", 2.0)),
        "base": config.get("base", "svdd"),
        "center": float(config.get("center", 0.0)),
        "fixed_inner_diag": bool(config.get("fixed_inner_diag", False)),
        "prior_sigma": config.get("prior_sigma"),
        "seed": config.get("seed"),
    }


def build_tabular_detector(family: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised detector of ``family`` described by ``config``."""
    features = int(config["features"])
    if family == "usflow":
        return USFlow((features,), **_flow_kwargs(config))
    if family == "nonusflow":
        return NonUSFlow((features,), **_flow_kwargs(config))
    if family == "oneflow":
        return OneFlow(USFlow((features,), **_flow_kwargs(config)), quantile=float(config["quantile"]))
    if family == "deep_svdd":
        widths = [features, *(int(w) for w in config["widths"])]
        return DeepSVDD(BiasFreeMLP(widths), widths[-1])
    if family in ("dohsc", "do2hsc"):
        widths = [features, *(int(w) for w in config["widths"])]
        encoder = OrthogonalProjectionEncoder(hypersphere_encoder(widths), widths[-1])
        cls = DOHSC if family == "dohsc" else DO2HSC
        return cls(encoder, nu=float(config["nu"]))
    if family in ("vae_usflow", "vae_nonusflow"):
        latent = int(config["latent_dim"])
        prior_cls = USFlow if family == "vae_usflow" else NonUSFlow
        prior = prior_cls((latent,), **_flow_kwargs({**config, "base": "standard"}))
        return VAEFlow(
            features,
            latent,
            hidden=tuple(int(h) for h in config["vae_hidden"]),
            prior=prior,
            sigma_min=float(config["sigma_min"]),
        )
    raise ValueError(f"unknown tabular model family {family!r}; expected one of {TABULAR_FAMILIES}")
