"""Score the held-out test samples with a selected model: latent, latent norm, ``ln p̂`` and ``ln|det J|``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.flows import CouplingFlow
from models.tabular.deep_svdd import DeepSVDD


@dataclass
class LatentScores:
    """Per test sample: latent code, ``‖latent - c‖``, estimated ``ln p̂(x)`` and ``ln|det J(x)|``.

    For Deep SVDD ``latent = ω(x)`` and the two density columns are NaN (it has no likelihood).
    """

    latent: np.ndarray
    center: np.ndarray
    latent_norm: np.ndarray
    estimated_log_prob: np.ndarray
    log_abs_det: np.ndarray


@torch.no_grad()
def score_model(
    model: nn.Module, x: torch.Tensor, input_log_abs_det: float = 0.0, batch_size: int = 4096
) -> LatentScores:
    """Evaluate ``model`` (eval mode, float32) on ``x`` in batches.

    ``x`` may be preprocessed by a map ``s`` with constant ``ln|det J_s| = input_log_abs_det``;
    it is added to ``ln|det J|`` and to ``ln p̂``, so both refer to the raw inputs:
    ``ln p̂(x) = ln p_B(φ(s(x))) + ln|det J_φ(s(x))| + ln|det J_s|``.
    """
    model.eval()
    latents, log_dets = [], []
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size].float()
        if isinstance(model, CouplingFlow):
            z, log_det = model(batch)
        elif isinstance(model, DeepSVDD):
            z, log_det = model.encoder(batch), torch.full((batch.shape[0],), float("nan"))
        else:
            raise TypeError(f"cannot score a {type(model).__name__}")
        latents.append(z)
        log_dets.append(log_det)
    z = torch.cat(latents)
    log_det = torch.cat(log_dets) + input_log_abs_det
    if isinstance(model, CouplingFlow):
        center = model.base.center
        estimated = model.base.log_prob(z) + log_det
    else:
        center = model.center
        estimated = torch.full_like(log_det, float("nan"))
    norm = (z - center).pow(2).sum(dim=1).sqrt()
    return LatentScores(
        latent=z.double().numpy(),
        center=center.double().numpy(),
        latent_norm=norm.double().numpy(),
        estimated_log_prob=estimated.double().numpy(),
        log_abs_det=log_det.double().numpy(),
    )
