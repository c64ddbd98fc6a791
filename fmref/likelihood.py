"""Exact likelihood of a flow through the divergence of its vector field.

Along the ODE dX/dt = u_t(X), d/dt log p_t(X_t) = −div u_t(X_t), so

    log p_1(x1) = log p_0(X_0) − ∫_0^1 div u_t(X_t) dt,

with X_0 found by integrating the ODE backwards from X_1 = x1. The augmented state
(x, ∫ div u) is integrated from t1 down to t0 in one solve. The divergence is either exact (a
callable, e.g. the marginal's analytic divergence or an MLP's Jacobian trace) or Hutchinson's
estimate vᵀ(∇u)v with fixed probes v (E[v vᵀ] = I), which is unbiased for every probe count.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal, final

import numpy as np

from . import _ode
from ._check import (
    MISSING,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_rng,
)
from ._xp import LOG_2PI, Array, Namespace, device, float_array, from_numpy, namespace
from .marginals import MarginalPath
from .samplers import integrate

__all__ = ["Hutchinson", "LikelihoodResult", "log_likelihood"]


@final
@dataclass(frozen=True)
class LikelihoodResult:
    """Outcome of :func:`log_likelihood`, arrays in x1's namespace.

    log_prob : (n,) log p_1(x1) = log_p0 − delta.
    log_p0 : (n,) log p_0(X_0).
    delta : (n,) ∫_{t0}^{t1} div u_t(X_t) dt (Hutchinson: the mean over probes).
    x0 : (n, d) the points X_{t0} reached backwards.
    nfe : calls of the field (finite-difference JVPs count their two calls per probe).
    stderr : (n,) standard error of delta over the probes (Hutchinson with n_probes ≥ 2),
        else None.
    method : the ODE method.
    """

    log_prob: Array
    log_p0: Array
    delta: Array
    x0: Array
    nfe: int
    stderr: Array | None
    method: str


def _standard_normal_log_prob(x: Array) -> Array:
    xp = namespace(x)
    return -0.5 * xp.sum(x * x, axis=1) - 0.5 * x.shape[1] * LOG_2PI


@final
@dataclass(frozen=True, kw_only=True)
class Hutchinson:
    """Options of Hutchinson's divergence estimate vᵀ(∇u)v, passed as ``divergence=``.

    Attributes
    ----------
    n_probes : probes v per point (>= 1), drawn once and kept along the trajectory; the
        estimate of ∫ div u is the mean over probes, with its standard error when >= 2.
    probe : "rademacher" (±1) or "gaussian" (standard normal); both have E[v vᵀ] = I.
    rng : numpy.random.Generator or int seed for the probes (required). A Generator is
        advanced by each use, an int seed draws the same probes every time.
    jacobian : where the Jacobian-vector products come from: an object exposing
        ``jvp(x, t, v)`` or ``jacobian(x, t)``; None for the field itself when it exposes
        them (an :class:`~fmref.mlp.MLP`, a :class:`~fmref.marginals.MarginalPath`, or the
        object of a bound method such as ``mp.vector_field``), else differences; "fd" for
        central differences (u(x + h v) − u(x − h v)) / 2h, whose bias is O(h²) (h³/6 times
        the third derivative of u along v).
    fd_step : h of the differences (> 0); None for ε^{1/3} of the dtype (6e-6 in float64,
        5e-3 in float32).
    """

    rng: Any
    n_probes: int = 1
    probe: Literal["rademacher", "gaussian"] = "rademacher"
    jacobian: Any = None
    fd_step: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_probes", check_int(self.n_probes, "n_probes", low=1))
        check_choice(self.probe, "probe", ("rademacher", "gaussian"))
        check_rng(self.rng)  # fail early; converted again at use, so an int seed stays one
        if isinstance(self.jacobian, str):
            check_choice(self.jacobian, "jacobian", ("fd",))
        elif self.jacobian is not None and not _has_jacobian(self.jacobian):
            raise TypeError("jacobian must expose jvp(x, t, v) or jacobian(x, t), or be 'fd'")
        if self.fd_step is not None:
            step = check_float(self.fd_step, "fd_step", low=0.0, low_open=True)
            object.__setattr__(self, "fd_step", step)


def _has_jacobian(obj: Any) -> bool:
    return callable(getattr(obj, "jvp", None)) or callable(getattr(obj, "jacobian", None))


def _provider(field: Any, attribute: str) -> Any:
    """The object that supplies ``attribute`` for ``field``: the field itself, or the object
    its bound method belongs to (``mp.vector_field`` → ``mp``); None if neither has it."""
    for candidate in (field, _ode.bound_owner(field)):
        if callable(getattr(candidate, attribute, None)):
            return candidate
    return None


#: The deprecated keyword spelling of the Hutchinson options, old name → Hutchinson field.
_OLD_HUTCHINSON = {
    "n_probes": "n_probes",
    "probe": "probe",
    "rng": "rng",
    "jacobian_source": "jacobian",
    "fd_step": "fd_step",
}


def _divergence_option(divergence: Any, old: dict[str, Any]) -> Any:
    """Resolve ``divergence`` and the deprecated Hutchinson keywords into one value."""
    given = {k: v for k, v in old.items() if v is not MISSING}
    if isinstance(divergence, str):
        check_choice(divergence, "divergence", ("hutchinson",))
        warnings.warn(
            "divergence='hutchinson' with n_probes/probe/rng/jacobian_source/fd_step keywords "
            "is deprecated; pass divergence=Hutchinson(rng=..., n_probes=..., ...)",
            DeprecationWarning,
            stacklevel=3,
        )
        if "rng" not in given:
            raise TypeError("rng (numpy.random.Generator or int seed) is required for Hutchinson")
        return Hutchinson(**{_OLD_HUTCHINSON[k]: v for k, v in given.items()})
    if given:
        raise TypeError(
            f"{sorted(given)} apply only to divergence='hutchinson' (deprecated); pass "
            "divergence=Hutchinson(...) instead"
        )
    return divergence


def log_likelihood(
    field: Any,
    x1: Any,
    *,
    divergence: Any = None,
    log_p0: Any = None,
    t0: float = 0.0,
    t1: float = 1.0,
    method: str = "dop853",
    steps: int = 200,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    n_probes: Any = MISSING,
    probe: Any = MISSING,
    rng: Any = MISSING,
    jacobian_source: Any = MISSING,
    fd_step: Any = MISSING,
) -> LikelihoodResult:
    """Compute log p_{t1}(x1) = log p_{t0}(X_{t0}) − ∫_{t0}^{t1} div u_t(X_t) dt.

    Parameters
    ----------
    field : callable ``u(x, t)`` → (n, d).
    x1 : (n, d) points at t1.
    divergence : how div u is computed: a callable ``div(x, t)`` → (n,) (the exact trace,
        e.g. ``MarginalPath.divergence`` or ``MLP.divergence``); a :class:`Hutchinson`
        options object (the stochastic estimate); or None for the ``divergence`` method of
        the field, or of the object a bound-method field belongs to. The exact marginal
        field with its own divergence (``mp.vector_field`` with None or ``mp.divergence``)
        is evaluated in one pass of the marginal engine.
    log_p0 : callable x → (n,), log p_{t0}; default log N(0, I), allowed only at t0 = 0. VP needs
        ``MarginalPath(...).log_prob(x, t0)`` since its α_0 ≠ 0.
    t0, t1 : t0 < t1 in [0, 1].
    method, steps, rtol, atol : the backward ODE solve (see :func:`fmref.samplers.integrate`).
    n_probes, probe, rng, jacobian_source, fd_step : deprecated spelling of
        ``divergence=Hutchinson(n_probes=, probe=, rng=, jacobian=, fd_step=)``, accepted with
        ``divergence="hutchinson"`` for one release.

    Returns
    -------
    LikelihoodResult.
    """
    x1, xp = float_array(x1, "x1", ndim=2)
    n, d = x1.shape
    check_callable(field, "field", "field(x, t)")
    t0 = check_float(t0, "t0", low=0.0, high=1.0)
    t1 = check_float(t1, "t1", low=0.0, high=1.0)
    if not t0 < t1:
        raise ValueError(f"t0 must be smaller than t1, got t0={t0!r}, t1={t1!r}")
    if log_p0 is not None:
        check_callable(log_p0, "log_p0", "log_p0(x) -> (n,) (or None)")
    if log_p0 is None and t0 != 0.0:
        # N(0, I) is p_init = p_0 only; at t0 > 0 the default would be silently wrong.
        raise ValueError(
            f"log_p0 is required when t0 = {t0!r} > 0: pass the density of p_t0, e.g. "
            "lambda x: marginal.log_prob(x, t0)"
        )
    old = {
        "n_probes": n_probes,
        "probe": probe,
        "rng": rng,
        "jacobian_source": jacobian_source,
        "fd_step": fd_step,
    }
    divergence = _divergence_option(divergence, old)
    u = _ode.CheckedField(field, x1)

    if isinstance(divergence, Hutchinson):
        probes = _draw_probes(divergence, (n, d), xp, device(x1), x1.dtype)
        rate = _hutchinson(u, probes, divergence, field)
        extra = divergence.n_probes
    else:
        rate, extra = _exact(field, u, divergence, n), 1

    def augmented(y: Array, t: Array) -> Array:
        return rate(y[:, :d], t)

    dev, dt = device(x1), x1.dtype
    y1 = xp.concat([x1, xp.zeros((n, extra), dtype=dt, device=dev)], axis=1)
    res = integrate(augmented, y1, method=method, steps=steps, t0=t1, t1=t0, rtol=rtol, atol=atol)
    x0 = res.x[:, :d]
    # Integrating from t1 down to t0 accumulates ∫_{t1}^{t0} = −∫_{t0}^{t1}.
    per_probe = -res.x[:, d:]
    delta = xp.mean(per_probe, axis=1)
    stderr = None
    if extra >= 2:
        stderr = xp.std(per_probe, axis=1, correction=1) / math.sqrt(extra)
    lp0 = _standard_normal_log_prob(x0) if log_p0 is None else log_p0(x0)
    if tuple(getattr(lp0, "shape", ())) != (n,):
        raise ValueError(f"log_p0 must return shape ({n},), got {tuple(getattr(lp0, 'shape', ()))}")
    if bool(xp.any(xp.isnan(lp0))):
        raise ValueError("log_p0 returned NaN at some of the points X_t0 reached backwards")
    return LikelihoodResult(lp0 - delta, lp0, delta, x0, u.nfe, stderr, method)


def _exact(field: Any, u: _ode.CheckedField, divergence: Any, n: int) -> Any:
    """Rate function (u, div u) of the augmented state with an exact divergence."""
    owner = _ode.bound_owner(field)
    # The exact marginal field is recognised by identity (the bound method of one
    # MarginalPath), so that one pass of the marginal engine shares the responsibilities
    # between u and div u.
    fused = isinstance(owner, MarginalPath) and field == owner.vector_field
    if divergence is None:
        source = _provider(field, "divergence")
        if source is None:
            raise TypeError(
                "divergence is None and the field has no divergence method: pass "
                "divergence=callable or divergence=Hutchinson(rng=...)"
            )
        divergence = source.divergence
    check_callable(divergence, "divergence", "divergence(x, t) -> (n,)")
    fused = fused and divergence == owner.divergence

    def rate(x: Array, t: Array) -> Array:
        xp = namespace(x)
        if fused:
            u.nfe += 1
            r = owner.evaluate(x, t, ("vector_field", "divergence"))
            v, div = r["vector_field"], r["divergence"]
        else:
            v, div = u(x, t), divergence(x, t)
        if tuple(div.shape) != (n,):
            raise ValueError(f"divergence must return shape ({n},), got {tuple(div.shape)}")
        if not bool(xp.all(xp.isfinite(div))):
            raise ValueError(f"divergence returned non-finite values at t = {float(t[0])!r}")
        return xp.concat([v, div[:, None]], axis=1)

    return rate


def _draw_probes(
    opts: Hutchinson, shape: tuple[int, int], xp: Namespace, dev: Any, dt: Any
) -> list[Array]:
    g = check_rng(opts.rng)
    out = []
    for _ in range(opts.n_probes):
        if opts.probe == "rademacher":
            v = 2.0 * g.integers(0, 2, size=shape).astype(np.float64) - 1.0
        else:
            v = g.standard_normal(shape)
        out.append(from_numpy(v, xp, dev, dt))
    return out


def _hutchinson(u: _ode.CheckedField, probes: list[Array], opts: Hutchinson, field: Any) -> Any:
    """Rate function (u, vᵀ∇u v for each probe v) of the augmented state."""
    if opts.jacobian == "fd":
        source = None
    elif opts.jacobian is not None:
        source = opts.jacobian
    else:
        source = _provider(field, "jvp") or _provider(field, "jacobian")
    h = opts.fd_step

    def rate(x: Array, t: Array) -> Array:
        nonlocal h
        xp = namespace(x)
        v0 = u(x, t)
        jac = None
        if source is not None and not callable(getattr(source, "jvp", None)):
            jac = source.jacobian(x, t)  # (n, d, d), shared by every probe
        cols = [v0]
        for v in probes:
            if jac is not None:
                jv = xp.squeeze(jac @ v[:, :, None], axis=2)
            elif source is not None:
                jv = source.jvp(x, t, v)
            else:
                if h is None:
                    h = float(xp.finfo(x.dtype).eps) ** (1 / 3)
                jv = (u(x + h * v, t) - u(x - h * v, t)) / (2 * h)
            cols.append(xp.sum(v * jv, axis=1)[:, None])
        return xp.concat(cols, axis=1)

    return rate
