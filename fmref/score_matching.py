"""Denoising score matching in every parameterisation, with exact minimisers and floors.

With x = α_t z + β_t ε (z ~ p_data, ε ~ N(0, I)) a model m_θ(x, t) regresses a target τ:

================  ===============  =======================  ===========================
parameterisation  target τ         exact minimiser E[τ|x]    κ_t (floor = κ_t² tr Cov(z|x))
================  ===============  =======================  ===========================
``"score"``       −ε/β_t (DSM)     ∇log p_t(x)              α_t/β_t²
``"noise"``       ε                ε̂ = E[ε|x]               α_t/β_t
``"data"``        z                x̂ = E[z|x]               1
``"velocity"``    α̇_t z + β̇_t ε    u_t(x)                   c_t = α̇_t − β̇_t α_t/β_t
================  ===============  =======================  ===========================

Every target is affine in z given x (ε = (x − α z)/β), so Cov(τ | x) = κ_t² Cov(z | x): for
example Cov(ε | x) = (α²/β²) Cov(z | x). Hence for every model and time weighting λ(t)

    E[L_DSM(θ)] = E_t λ(t) E_x ||m_θ(x, t) − E[τ|x]||² + E_t λ(t) E_x κ_t² tr Cov(z|x),

the loss against the exact target plus an irreducible floor; the velocity row is the CFM
identity of :mod:`fmref.losses`. The estimators reuse that module's draws (t ~ U[0, t_max),
z, ε in one order, common random numbers across estimators with equal seeds) and
:class:`~fmref.losses.LossEstimate` (with its per-t profile); ``reduction="mean"`` averages the
squared error over the d coordinates (torchcfm's, flow_matching's and diffusers' MSE) instead
of summing it, as in :mod:`fmref.losses`.

Infinite floors. Near t = 1, tr Cov(z|x) ≈ d β²/α² (positive-definite Σ_k), so the floor's
integrand behaves like λ κ² β²/α²; near t = 0 like λ κ² tr Cov(z). Unweighted DSM (κ = α/β²)
gives 1/β² at t = 1, not integrable for any schedule: the DSM floor is infinite on [0, 1]
unless λ(t) vanishes like β² (the usual λ = β², which turns it into the noise floor). The
rate of the integrand at each end is measured numerically (a power law fitted between
1 − 10⁻⁴ and 1 − 10⁻⁶, and between 10⁻⁶ and 10⁻⁴); a power ≥ 1 is reported as an infinite
floor with a warning, as :func:`fmref.cfm_floor` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from ._xp import Array, device, namespace, times, to_numpy
from .losses import LossEstimate, _check, _draw, _estimate, _infinite, _sq_norm
from .marginals import MarginalPath
from .paths import PathSample
from .schedules import ScheduleValues

__all__ = [
    "PARAMETERISATIONS",
    "dsm_floor",
    "dsm_loss",
    "exact_target_loss",
    "floor_integrand",
]

Parameterisation = Literal["score", "noise", "data", "velocity"]
PARAMETERISATIONS: tuple[str, ...] = ("score", "noise", "data", "velocity")
#: MarginalPath quantity giving E[τ | x] for each parameterisation.
_EXACT = {
    "score": "score",
    "noise": "noise_posterior_mean",
    "data": "posterior_mean",
    "velocity": "vector_field",
}
Weighting = Callable[[np.ndarray], Any] | None


def _param(p: Any) -> Parameterisation:
    if p not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {p!r}")
    return p


def _kappa(p: str, sv: ScheduleValues) -> Any:
    """κ_t with Cov(τ | x) = κ_t² Cov(z | x): the one table of the floor factors."""
    if p == "score":
        return sv.alpha / (sv.beta * sv.beta)
    if p == "noise":
        return sv.alpha / sv.beta
    if p == "data":
        return sv.alpha * 0 + 1
    return sv.alpha_dot - sv.beta_dot * sv.alpha / sv.beta


def _target(p: str, ps: PathSample) -> Array:
    """The regression target τ of parameterisation ``p`` at the path sample ``ps``."""
    if p == "velocity":
        return ps.target
    if p == "data":
        return ps.z
    if p == "noise":
        return ps.eps
    xp = namespace(ps.x)
    beta = xp.reshape(ps.schedule.beta, (-1, 1))
    if not bool(xp.all(beta > 0)):
        raise ValueError("t: the score target −ε/β_t needs β_t > 0 (t < 1)")
    return -ps.eps / beta


def _weights(weighting: Weighting, t: Any, n: int) -> np.ndarray:
    tn = np.asarray(to_numpy(t), dtype=np.float64)
    if weighting is None:
        return np.ones(n)
    if not callable(weighting):
        raise TypeError(f"weighting must be a callable λ(t) or None, got {weighting!r}")
    lam = np.asarray(to_numpy(weighting(tn)), dtype=np.float64)
    lam = np.broadcast_to(lam, tn.shape) if lam.ndim == 0 else lam
    if lam.shape != tn.shape or not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError(
            f"weighting(t) must return finite values >= 0 of shape {tn.shape}, got {lam!r}"
        )
    return lam


def floor_integrand(
    marginal: MarginalPath, x: Any, t: Any, *, parameterisation: Parameterisation
) -> Array:
    """κ_t² tr Cov(z | X_t = x), shape (n,): E[||τ − E[τ|x]||² | x] for the parameterisation.

    The velocity case is :meth:`MarginalPath.cfm_floor_integrand`; the others multiply
    :meth:`MarginalPath.posterior_cov_trace` by κ_t². Needs β_t > 0 except for ``"data"``.
    """
    p = _param(parameterisation)
    if p == "velocity":
        return marginal.cfm_floor_integrand(x, t)
    tr = marginal.posterior_cov_trace(x, t)
    if p == "data":
        return tr
    xp = namespace(tr)
    sv = marginal.schedule(times(t, tr.shape[0], xp, tr.dtype, device(tr)))
    if not bool(xp.all(sv.beta > 0)):
        raise ValueError(f"t: the {p} floor needs β_t > 0 (t < 1)")
    k = _kappa(p, sv)
    return (k * k) * tr


def dsm_loss(
    model: Callable[[Array, Array], Array],
    marginal: MarginalPath,
    *,
    parameterisation: Parameterisation,
    weighting: Weighting = None,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
) -> LossEstimate:
    """Estimate E_{t~U[0,t_max)} λ(t) E_{z,ε} ||m_θ(α_t z + β_t ε, t) − τ||².

    ``model(x, t)`` takes x (n, d) and t (n,) and returns (n, d); ``weighting`` λ(t) maps a
    float64 array of times to nonnegative weights (None: λ ≡ 1). For ``"score"`` this is
    denoising score matching E||s_θ(x_t) + ε/β_t||². Where the floor is infinite (unweighted
    DSM with t_max = 1, for one) the expected loss is too, and ``warning`` says so.
    """
    p = _param(parameterisation)
    t, err = _weighted_errors(model, marginal, p, weighting, n, rng, t_max, bins, like, False)
    # Where the floor is infinite so is the expected loss: the sample mean is then meaningless.
    warning = _divergence(marginal, p, weighting, float(t_max))
    return _estimate(t, err, float(t_max), bins, reduction, marginal.dim, warning=warning)


def exact_target_loss(
    model: Callable[[Array, Array], Array],
    marginal: MarginalPath,
    *,
    parameterisation: Parameterisation,
    weighting: Weighting = None,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
) -> LossEstimate:
    """Estimate E_t λ(t) E_{x~p_t} ||m_θ(x, t) − E[τ | x]||² against the exact minimiser.

    E[τ|x] is the exact score, ε̂, x̂ or u_t of ``marginal`` (the table of the module
    docstring); with the same ``rng`` the draws are those of :func:`dsm_loss`.
    """
    p = _param(parameterisation)
    t, err = _weighted_errors(model, marginal, p, weighting, n, rng, t_max, bins, like, True)
    return _estimate(t, err, float(t_max), bins, reduction, marginal.dim)


def _weighted_errors(
    model: Callable[[Array, Array], Array],
    marginal: MarginalPath,
    p: str,
    weighting: Weighting,
    n: int,
    rng: Any,
    t_max: float,
    bins: int,
    like: Any,
    exact: bool,
) -> tuple[Array, np.ndarray]:
    """Draw the path and return t and λ(t) ||m_θ(x, t) − τ||², τ the sampled target or, with
    ``exact``, its conditional mean E[τ | x] (same draws either way for the same rng)."""
    _check(marginal, n, t_max, bins)
    ps = _draw(marginal, int(n), rng, float(t_max), like)
    x, t = ps.x, ps.t
    target = marginal.evaluate(x, t, (_EXACT[p],))[_EXACT[p]] if exact else _target(p, ps)
    err = _sq_norm(model, x, t, target, namespace(x))
    return t, np.asarray(to_numpy(err), dtype=np.float64) * _weights(weighting, t, int(n))


def dsm_floor(
    marginal: MarginalPath,
    *,
    parameterisation: Parameterisation,
    weighting: Weighting = None,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
) -> LossEstimate:
    """Estimate the irreducible loss E_t λ(t) E_{x~p_t} κ_t² tr Cov(z|x) of a parameterisation.

    Where the integrand is not integrable on [0, t_max) (see the module docstring), ``value``
    and ``stderr`` are ``inf`` and ``warning`` says why; ``samples`` and ``profile`` still hold
    the finite draws. Draws at t_max = 1 stay below 1, so the velocity and score floors need
    β_t > 0 only at the drawn times.
    """
    p = _param(parameterisation)
    _check(marginal, n, t_max, bins)
    ps = _draw(marginal, int(n), rng, float(t_max), like)
    x, t = ps.x, ps.t
    lam = _weights(weighting, t, int(n))
    ell = np.asarray(to_numpy(floor_integrand(marginal, x, t, parameterisation=p)), np.float64)
    est = _estimate(t, ell * lam, float(t_max), bins, reduction, marginal.dim)
    warning = _divergence(marginal, p, weighting, float(t_max))
    return est if warning is None else _infinite(est, warning)


#: Offsets from an end of [0, 1] between which the integrand's power law is fitted.
_ENDS = (1e-4, 1e-6)
#: A fitted power ≥ 1 − this counts as non-integrable (a 1/t or 1/(1 − t) rate).
_POWER_SLACK = 0.05


def _divergence(marginal: MarginalPath, p: str, weighting: Weighting, t_max: float) -> str | None:
    """Why the floor is infinite on [0, t_max), or None: fitted power laws at both ends."""
    data = marginal.data
    tr0 = float(np.trace(data.covariance()))
    d = data.dim

    def rate(side: str) -> float:
        eps = np.asarray(_ENDS)
        t = eps if side == "0" else 1.0 - eps
        with np.errstate(all="ignore"):
            sv = marginal.schedule(t)
            k = np.asarray(_kappa(p, sv), dtype=np.float64)
            lam = _weights(weighting, t, t.shape[0])
            a, b = np.asarray(sv.alpha), np.asarray(sv.beta)
            cov = np.full(t.shape, tr0) if side == "0" else d * b * b / (a * a)
            g = lam * k * k * cov
        if not np.all(np.isfinite(g)):
            return math.inf
        if np.any(g <= 0):
            return -math.inf
        return float(math.log(g[1] / g[0]) / math.log(eps[0] / eps[1]))

    for side, where in (("0", "t = 0"), ("1", "t = 1")):
        if side == "1" and t_max < 1.0:
            continue
        power = rate(side)
        if power >= 1.0 - _POWER_SLACK:
            return (
                f"the {p} floor's integrand λ(t) κ_t² tr Cov(z|x) grows like "
                f"|t − {side}|^(−{power:.2f}) near {where} ({marginal.schedule!r}), so the "
                f"floor (and the expected loss) is infinite"
                + ("; pass t_max < 1 or a weighting that vanishes there" if side == "1" else "")
            )
    return None
