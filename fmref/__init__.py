"""fmref: ground-truth flow matching for Gaussian-mixture data.

t = 0 is noise (p_init = N(0, I)), t = 1 is data (p_data); arrays are batch-first (n, d).
``fmref.testing`` (assert helpers, hypothesis strategies, golden vectors) is imported
separately and never by the core.
"""

from __future__ import annotations

from . import (
    adapters,
    continuity,
    conversions,
    exact,
    guidance,
    likelihood,
    losses,
    metrics,
    samplers,
    schedules,
    score_matching,
    sde,
    train,
)
from .guidance import CFG, ClassifierGuidance, Tilted, guidance_weight
from .likelihood import Hutchinson, LikelihoodResult, log_likelihood
from .losses import LossEstimate, cfm_floor, cfm_loss, fm_loss
from .marginals import QUANTITIES, QUANTITIES_GIVEN_Y, QUANTITY_INFO, MarginalPath
from .mixtures import (
    GaussianMixture,
    eight_gaussians,
    eight_gaussians_classes,
    random_2d,
    random_mixture,
)
from .mlp import MLP
from .optim import Adam, cosine_decay, cosine_schedule
from .paths import GaussianPath, PathSample
from .report import Report, report
from .samplers import SampleResult, integrate
from .schedules import VP, Cosine, Custom, Linear, LinearVP, Polynomial, Schedule, SqrtBeta
from .train import TrainConfig, TrainResult, load_checkpoint

__version__ = "0.1.0"

__all__ = [
    "CFG",
    "MLP",
    "QUANTITIES",
    "QUANTITIES_GIVEN_Y",
    "QUANTITY_INFO",
    "VP",
    "Adam",
    "ClassifierGuidance",
    "Cosine",
    "Custom",
    "GaussianMixture",
    "GaussianPath",
    "Hutchinson",
    "LikelihoodResult",
    "Linear",
    "LinearVP",
    "LossEstimate",
    "MarginalPath",
    "PathSample",
    "Polynomial",
    "Report",
    "SampleResult",
    "Schedule",
    "SqrtBeta",
    "Tilted",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "adapters",
    "cfm_floor",
    "cfm_loss",
    "continuity",
    "conversions",
    "cosine_decay",
    "cosine_schedule",
    "eight_gaussians",
    "eight_gaussians_classes",
    "exact",
    "fm_loss",
    "guidance",
    "guidance_weight",
    "integrate",
    "likelihood",
    "load_checkpoint",
    "log_likelihood",
    "losses",
    "metrics",
    "random_2d",
    "random_mixture",
    "report",
    "samplers",
    "schedules",
    "score_matching",
    "sde",
    "train",
]
