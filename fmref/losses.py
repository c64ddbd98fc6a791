"""Flow-matching losses with exact yardsticks: L_CFM, L_FM and the irreducible floor L*.

docs/theory.md §10: for every field u^θ, E[L_CFM(θ)] = L_FM(θ) + L* with
L* = E_t E_{x~p_t}[c_t² tr Cov(z|x)], c_t = α̇_t − β̇_t α_t/β_t. The three estimators below
draw (t, z, ε) in the same order (t ~ U[0, t_max), z ~ p_data, ε ~ N(0, I), x = α_t z + β_t ε),
so equal seeds give common random numbers and their per-sample values can be subtracted.

Scale: fmref sums the squared error over the d coordinates. torchcfm, flow_matching and
diffusers average it (``torch.mean((v − u)**2)``), so their losses are fmref's divided by d;
``reduction="mean"`` on every function here reports that scale (L* included). The relative
FM loss is a ratio and does not depend on it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from ._check import check_callable, check_choice, check_float, check_int, check_rng
from ._xp import Array, Namespace, device, from_numpy, namespace, to_numpy
from .marginals import MarginalPath
from .paths import PathSample
from .schedules import Polynomial

__all__ = ["LossEstimate", "cfm_floor", "cfm_loss", "floor_profile", "fm_loss"]

Field = Callable[[Array, Array], Array]


@final
@dataclass(frozen=True)
class LossEstimate:
    """A Monte-Carlo estimate of E_{t~U[0, t_max)} E[ℓ(t, ·)] with its per-t profile.

    Attributes
    ----------
    value, stderr : the estimate and its standard error (``inf``/``nan`` when it diverges).
    n, t_max : sample size and the upper end of the time range.
    t_edges : (bins + 1,) edges of equal-width time bins on [0, t_max].
    profile, profile_stderr : (bins,) mean of ℓ and its standard error per bin (the per-t
        profile ℓ(t); ``nan`` for an empty bin).
    t, samples : (n,) the drawn times and per-sample values (for common-random-number use).
    relative, relative_stderr : value ÷ E||u_t(x)||² (fm_loss only, else None).
    warning : why the value is infinite or unreliable, else None.
    reduction : "sum" over coordinates (fmref's scale) or "mean" (÷ d: torchcfm's,
        flow_matching's and diffusers' scale); applies to value, profile and samples.
    """

    value: float
    stderr: float
    n: int
    t_max: float
    t_edges: np.ndarray
    profile: np.ndarray
    profile_stderr: np.ndarray
    t: np.ndarray
    samples: np.ndarray
    relative: float | None = None
    relative_stderr: float | None = None
    warning: str | None = None
    reduction: str = "sum"

    @property
    def finite(self) -> bool:
        return math.isfinite(self.value)


def _check(marginal: Any, n: Any, t_max: Any, bins: Any) -> None:
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    check_int(n, "n", low=2)
    check_float(t_max, "t_max", low=0.0, high=1.0, low_open=True)
    check_int(bins, "bins", low=1)


_REDUCTIONS = ("sum", "mean")


def _per_coordinate(reduction: Any, d: int) -> float:
    """Factor turning a squared norm summed over d coordinates into the chosen reduction."""
    return 1.0 if check_choice(reduction, "reduction", _REDUCTIONS) == "sum" else 1.0 / d


def _draw(marginal: MarginalPath, n: int, rng: Any, t_max: float, like: Any) -> PathSample:
    """Draw t ~ U[0, t_max), z ~ p_data, ε ~ N(0, I) in that order, in like's namespace."""
    g = check_rng(rng)
    t = t_max * g.random(n)
    z = marginal.data.sample(n, rng=g)
    if like is not None:
        xp = namespace(like)
        t, z = (from_numpy(a, xp, device(like), like.dtype) for a in (t, z))
    return marginal.path.draw(z, t, rng=g)


def _sq_norm(field: Field, x: Array, t: Array, target: Array, xp: Namespace) -> Array:
    out = field(x, t)
    if tuple(getattr(out, "shape", ())) != tuple(x.shape):
        shape = tuple(getattr(out, "shape", ()))
        raise ValueError(f"field must return shape {tuple(x.shape)}, got {shape}")
    if not bool(xp.all(xp.isfinite(out))):
        raise ValueError("field returned non-finite values (NaN or inf)")
    r = out - target
    return xp.sum(r * r, axis=1)


def _estimate(
    t: Any, samples: Any, t_max: float, bins: int, reduction: str = "sum", d: int = 1, **extra: Any
) -> LossEstimate:
    tn = np.asarray(to_numpy(t), dtype=np.float64)
    s = np.asarray(to_numpy(samples), dtype=np.float64) * _per_coordinate(reduction, d)
    n = s.shape[0]
    edges = np.linspace(0.0, t_max, bins + 1)
    idx = np.minimum((tn / t_max * bins).astype(np.int64), bins - 1)
    prof = np.full(bins, np.nan)
    prof_se = np.full(bins, np.nan)
    for b in range(bins):
        sb = s[idx == b]
        if sb.size:
            prof[b] = sb.mean()
            prof_se[b] = sb.std(ddof=1) / math.sqrt(sb.size) if sb.size > 1 else np.nan
    value = float(s.mean())
    stderr = float(s.std(ddof=1) / math.sqrt(n))
    return LossEstimate(
        value, stderr, n, float(t_max), edges, prof, prof_se, tn, s, reduction=reduction, **extra
    )


def fm_loss(
    field: Field,
    marginal: MarginalPath,
    *,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
    reference: Field | None = None,
) -> LossEstimate:
    """Estimate L_FM = E_{t, x~p_t} ||u^θ_t(x) − u_t(x)||² against the exact marginal field.

    Also the relative loss L_FM / E||u_t(x)||², whose standard error comes from the delta
    method on the ratio of two means (same draws). ``field(x, t)`` takes x (n, d) and t (n,)
    and returns (n, d); draws are float64 NumPy, or of ``like``'s namespace and dtype.
    ``reference(x, t)``, when given, replaces u_t as the exact field compared with (x still
    ~ p_t of ``marginal``): e.g. ``fmref.CFG(mp, y, w).vector_field`` with
    ``marginal = MarginalPath(mp.data.given(y), mp.path)`` measures a learned guided field.
    """
    _check(marginal, n, t_max, bins)
    if reference is not None:
        check_callable(reference, "reference", "reference(x, t) -> (n, d)")
    ps = _draw(marginal, int(n), rng, float(t_max), like)
    x, t, xp = ps.x, ps.t, namespace(ps.x)
    u = marginal.vector_field(x, t) if reference is None else reference(x, t)
    err = to_numpy(_sq_norm(field, x, t, u, xp)).astype(np.float64)
    unorm = to_numpy(xp.sum(u * u, axis=1)).astype(np.float64)
    mu_u = float(unorm.mean())
    rel = float(err.mean()) / mu_u
    # Delta method: Var(Ā/B̄) ≈ Var(a − R b) / (n B̄²).
    rel_se = float((err - rel * unorm).std(ddof=1) / (math.sqrt(n) * mu_u))
    return _estimate(
        t, err, float(t_max), bins, reduction, marginal.dim, relative=rel, relative_stderr=rel_se
    )


def cfm_loss(
    field: Field,
    marginal: MarginalPath,
    *,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
) -> LossEstimate:
    """Estimate L_CFM = E_{t, z, ε} ||u^θ_t(α_t z + β_t ε) − (α̇_t z + β̇_t ε)||² (Algorithm 3).

    For schedules with β̇ infinite at t = 1 the expectation is infinite (E L_CFM = L_FM + L*);
    the returned sample mean is then finite but meaningless and ``warning`` says so.
    """
    _check(marginal, n, t_max, bins)
    ps = _draw(marginal, int(n), rng, float(t_max), like)
    err = _sq_norm(field, ps.x, ps.t, ps.target, namespace(ps.x))
    warning = _divergence_warning(marginal, t_max)
    return _estimate(ps.t, err, float(t_max), bins, reduction, marginal.dim, warning=warning)


def _divergence_warning(marginal: MarginalPath, t_max: float) -> str | None:
    sched = marginal.schedule
    if isinstance(sched, Polynomial) and sched.p <= 0.5:
        # c_t = α̇/β ≈ p t^{p−1} and tr Cov(z|x) → tr Cov(z) as t → 0: ∫ t^{2p−2} dt diverges.
        return (
            f"{sched!r} has α̇ = p t^(p−1): c_t² tr Cov(z|x) ≈ p² t^(2p−2) tr Cov(z) near t = 0, "
            "so L* (and the expected CFM loss) is infinite for p ≤ 1/2 whatever t_max; the "
            "CFM target has unbounded variance near t = 0"
        )
    singular = getattr(sched, "singular_at_one", False)
    if not singular:
        with np.errstate(all="ignore"):
            singular = not math.isfinite(float(sched(np.ones(1)).beta_dot[0]))
    if not singular or t_max < 1.0:
        return None
    return (
        f"{sched!r} has β̇ infinite at t = 1: c_t² tr Cov(z|x) grows like 1/(1 − t) there, so "
        "L* (and the expected CFM loss) is infinite and the CFM target has unbounded variance "
        "near t = 1; pass t_max < 1 for a finite floor over [0, t_max]"
    )


def cfm_floor(
    marginal: MarginalPath,
    *,
    n: int = 4096,
    rng: Any = 0,
    t_max: float = 1.0,
    bins: int = 10,
    like: Any = None,
    reduction: str = "sum",
) -> LossEstimate:
    """Estimate the irreducible CFM loss L* = E_{t~U[0,t_max)} E_{x~p_t}[c_t² tr Cov(z|x)].

    c_t = α̇_t − β̇_t α_t/β_t. Where β̇ is infinite at t = 1 (SqrtBeta, LinearVP, VP) and
    t_max = 1, the integrand grows like 1/(1 − t); for Polynomial(p ≤ ½) it grows like t^(2p−2)
    near t = 0. Then ``value`` and ``stderr`` are ``inf``, ``warning`` explains, and
    ``samples``/``profile`` still hold the finite draws.
    """
    _check(marginal, n, t_max, bins)
    ps = _draw(marginal, int(n), rng, float(t_max), like)
    ell = marginal.cfm_floor_integrand(ps.x, ps.t)
    est = _estimate(ps.t, ell, float(t_max), bins, reduction, marginal.dim)
    warning = _divergence_warning(marginal, t_max)
    return est if warning is None else _infinite(est, warning)


def _infinite(est: LossEstimate, warning: str) -> LossEstimate:
    """``est`` with value and stderr inf: the integrand is not integrable, ``warning`` says why
    (the finite draws stay in ``samples`` and ``profile``)."""
    return dataclasses.replace(est, value=math.inf, stderr=math.inf, warning=warning)


def floor_profile(
    marginal: MarginalPath, t: Any, *, n: int = 4096, rng: Any = 0, reduction: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate ℓ*(t) = E_{x~p_t}[c_t² tr Cov(z|x)] at each time of ``t`` (< 1).

    Returns (mean, stderr), each shaped like ``t`` (a float64 NumPy 1-D array), from n exact
    draws of p_t per time.
    """
    ts = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if ts.ndim != 1 or not np.all((ts >= 0) & (ts < 1)):
        raise ValueError("t must be a 1-D array of times in [0, 1)")
    _check(marginal, n, 1.0, 1)
    scale = _per_coordinate(reduction, marginal.dim)
    g = check_rng(rng)
    mean, se = np.empty_like(ts), np.empty_like(ts)
    for i, ti in enumerate(ts):
        tt = np.full(int(n), ti)
        x = marginal.sample(int(n), tt, rng=g)
        ell = np.asarray(marginal.cfm_floor_integrand(x, tt), dtype=np.float64) * scale
        mean[i], se[i] = ell.mean(), ell.std(ddof=1) / math.sqrt(n)
    return mean, se
