"""Invertible layers and uniformly scaling flows (pure PyTorch)."""

from models.flows.base import IsotropicGaussian, standard_normal_base, svdd_aligned_base
from models.flows.coupling import MaskedAdditiveCoupling, MaskedAffineCoupling
from models.flows.flow import ConjugatedCouplingBlock, CouplingFlow, NonUSFlow, USFlow
from models.flows.lu import LUAffine
from models.flows.masks import make_mask
from models.flows.prior import LogNormalDeterminantPrior, bilateral_log_normal_log_prob

__all__ = [
    "ConjugatedCouplingBlock",
    "CouplingFlow",
    "IsotropicGaussian",
    "LUAffine",
    "LogNormalDeterminantPrior",
    "MaskedAdditiveCoupling",
    "MaskedAffineCoupling",
    "NonUSFlow",
    "USFlow",
    "bilateral_log_normal_log_prob",
    "make_mask",
    "standard_normal_base",
    "svdd_aligned_base",
]
