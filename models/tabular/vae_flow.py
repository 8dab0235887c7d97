"""VAE-USFlow / VAE-NonUSFlow (paper, section 4.4 and Appendix B.4): a VAE with a flow prior.

Generative model: ``b ~ N(0, I)``, ``z = φ⁻¹(b)``, ``x | z ~ N(dec(z), σ_min² I)``; posterior
``q(z | x) = N(μ(x), diag σ²(x))``. Training maximises the ELBO (one reparameterised sample)

    ``E_q[ ln N(x; dec(z), σ_min² I) − ln q(z | x) + ln N(φ(z); 0, I) + ln|det J_φ(z)| ]``.

Score: the negative joint log-density at the encoder mean,
``‖x − dec(μ)‖² / (2σ_min²) − ln p_φ(μ)``, i.e. the reconstruction error plus the flow's latent
NLL of ``μ`` (the paper combines both because an encoder alone may map anomalies into
high-density regions of the prior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.flows import CouplingFlow


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if index < len(widths) - 2:
            layers.append(nn.LeakyReLU(0.01))
    return nn.Sequential(*layers)


class VAEFlow(nn.Module):
    """Gaussian-MLP VAE whose latent prior is a (Non)USFlow with a ``N(0, I)`` base."""

    def __init__(
        self,
        features: int,
        latent_dim: int,
        hidden: Sequence[int],
        prior: CouplingFlow,
        sigma_min: float = 0.5,
    ) -> None:
        super().__init__()
        if sigma_min <= 0:
            raise ValueError("sigma_min must be positive")
        self.encoder = _mlp([features, *hidden, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(list(hidden)), features])
        self.prior = prior
        self.latent_dim = latent_dim
        self.sigma_min = float(sigma_min)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ(x), ln σ²(x))`` with the log-variance clamped to ``[-10, 10]``."""
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var.clamp(-10.0, 10.0)

    def reconstruction_nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``−ln N(x; dec(z), σ_min² I)`` per row."""
        squared = (x - self.decoder(z)).pow(2).sum(dim=1)
        return squared / (2 * self.sigma_min**2) + 0.5 * x.shape[1] * math.log(
            2 * math.pi * self.sigma_min**2
        )

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO, averaged over the batch."""
        mean, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        z = mean + std * torch.randn_like(std)
        log_q = (-0.5 * ((z - mean) / std).pow(2) - 0.5 * log_var - 0.5 * math.log(2 * math.pi)).sum(dim=1)
        return (self.reconstruction_nll(x, z) + log_q - self.prior.log_prob(z)).mean()

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction NLL + latent flow NLL at μ(x), NaN)``; no exact NLL of ``x``."""
        mean, _ = self.encode(x)
        value = self.reconstruction_nll(x, mean) + self.prior.nll(mean)
        return value, torch.full_like(value, float("nan"))
