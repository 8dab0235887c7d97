"""Latent alignment experiment (paper, Section 4.3 and Appendices C–D).

Deep SVDD, NonUSFlow and USFlow are fitted to an asymmetric Gaussian mixture whose exact
log-density is known; the rank agreement between the true log-likelihood and each model's
latent norm (and, for the flows, its estimated log-likelihood) measures latent alignment.
"""
