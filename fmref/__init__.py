"""fmref: ground-truth flow matching for Gaussian-mixture data.

t = 0 is noise (p_init = N(0, I)), t = 1 is data (p_data); arrays are batch-first (n, d).
"""

from __future__ import annotations

from . import continuity, conversions, schedules
from .marginals import QUANTITIES, MarginalPath
from .mixtures import GaussianMixture, eight_gaussians, random_2d
from .paths import GaussianPath
from .schedules import VP, Cosine, Custom, Linear, LinearVP, Polynomial, Schedule, SqrtBeta

__version__ = "0.1.0"

__all__ = [
    "QUANTITIES",
    "VP",
    "Cosine",
    "Custom",
    "GaussianMixture",
    "GaussianPath",
    "Linear",
    "LinearVP",
    "MarginalPath",
    "Polynomial",
    "Schedule",
    "SqrtBeta",
    "__version__",
    "continuity",
    "conversions",
    "eight_gaussians",
    "random_2d",
    "schedules",
]
