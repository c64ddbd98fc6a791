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
from dataclasses import dataclass
from typing import Any, Literal, final

import numpy as np

from ._xp import LOG_2PI, Array, Namespace, device, float_array, from_numpy, namespace
from .marginals import MarginalPath
from .mixtures import rng_from
from .samplers import integrate

__all__ = ["LikelihoodResult", "log_likelihood"]


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


def _owner(obj: Any) -> Any:
    return getattr(obj, "__self__", None)


def _jvp_source(field: Any, source: Any) -> Any:
    """Object giving exact Jacobian products: ``source``, else the field or its owner."""
    if isinstance(source, str):
        if source != "fd":
            raise ValueError(f"jacobian_source must be an object, None or 'fd', got {source!r}")
        return None
    if source is not None:
        if not (
            callable(getattr(source, "jvp", None)) or callable(getattr(source, "jacobian", None))
        ):
            raise TypeError("jacobian_source must expose jvp(x, t, v) or jacobian(x, t)")
        return source
    for cand in (field, _owner(field)):
        if callable(getattr(cand, "jvp", None)) or callable(getattr(cand, "jacobian", None)):
            return cand
    return None


class _CheckedField:
    """Count calls of the field and check the shape of what it returns."""

    def __init__(self, field: Any, n: int, d: int) -> None:
        self.field, self.n, self.d, self.calls = field, n, d, 0

    def __call__(self, x: Array, t: Array) -> Array:
        self.calls += 1
        out = self.field(x, t)
        shape = tuple(getattr(out, "shape", ()))
        if shape[1:] != (self.d,) or shape[0] != x.shape[0]:
            raise ValueError(
                f"field returned shape {shape} at t = {float(t[0])!r}; "
                f"expected ({x.shape[0]}, {self.d})"
            )
        return out


def log_likelihood(
    field: Any,
    x1: Any,
    *,
    divergence: Any = None,
    n_probes: int = 1,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    rng: Any = None,
    log_p0: Any = None,
    t0: float = 0.0,
    t1: float = 1.0,
    method: str = "dop853",
    steps: int = 200,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    jacobian_source: Any = None,
    fd_step: float | None = None,
) -> LikelihoodResult:
    """Compute log p_{t1}(x1) = log p_{t0}(X_{t0}) − ∫_{t0}^{t1} div u_t(X_t) dt.

    Parameters
    ----------
    field : callable ``u(x, t)`` → (n, d).
    x1 : (n, d) points at t1.
    divergence : callable ``div(x, t)`` → (n,) (exact trace, e.g. ``MarginalPath.divergence``
        or ``MLP.divergence``); ``"hutchinson"``; or None to use a ``divergence`` method of the
        field or of the object a bound-method field belongs to.
    n_probes, probe, rng : Hutchinson: probes v (Rademacher ±1 or standard Gaussian), drawn
        once per point and kept along the trajectory; the estimate of ∫ div u is the mean of
        ∫ vᵀ ∇u v dt over probes, with its standard error when n_probes ≥ 2.
    jacobian_source : Hutchinson's Jacobian-vector products come from an object exposing
        ``jvp(x, t, v)`` or ``jacobian(x, t)`` (default: the field or its owner, e.g. the
        MarginalPath of ``mp.vector_field``); ``"fd"`` or no such object uses central
        differences (u(x + h v) − u(x − h v)) / 2h, whose bias is O(h²) (h³/6 times the third
        derivative of u along v); ``fd_step`` h defaults to ε^{1/3} of the dtype (6e-6 in
        float64, 5e-3 in float32).
    log_p0 : callable x → (n,), log p_{t0}; default log N(0, I), allowed only at t0 = 0. VP needs
        ``MarginalPath(...).log_prob(x, t0)`` since its α_0 ≠ 0.
    t0, t1 : t0 < t1 in [0, 1].
    method, steps, rtol, atol : the backward ODE solve (see :func:`fmref.samplers.integrate`).

    Returns
    -------
    LikelihoodResult.
    """
    x1, xp = float_array(x1, "x1", ndim=2)
    n, d = x1.shape
    if not callable(field):
        raise TypeError(f"field must be callable as field(x, t), got {type(field).__name__}")
    for name, v in (("t0", t0), ("t1", t1)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a float in [0, 1], got {v!r}")
    if not t0 < t1:
        raise ValueError(f"t0 must be smaller than t1, got t0={t0!r}, t1={t1!r}")
    if log_p0 is not None and not callable(log_p0):
        raise TypeError(f"log_p0 must be a callable x -> (n,) or None, got {type(log_p0).__name__}")
    if log_p0 is None and t0 != 0.0:
        # N(0, I) is p_init = p_0 only; at t0 > 0 the default would be silently wrong.
        raise ValueError(
            f"log_p0 is required when t0 = {t0!r} > 0: pass the density of p_t0, e.g. "
            "lambda x: marginal.log_prob(x, t0)"
        )
    dev, dt = device(x1), x1.dtype
    u = _CheckedField(field, n, d)

    if isinstance(divergence, str) and divergence == "hutchinson":
        probes = _draw_probes(n_probes, probe, rng, (n, d), xp, dev, dt)
        rate = _hutchinson(u, probes, _jvp_source(field, jacobian_source), fd_step)
        extra = n_probes
    elif isinstance(divergence, str):
        raise ValueError(f"divergence must be a callable, 'hutchinson' or None, got {divergence!r}")
    else:
        rate, extra = _exact(field, u, divergence, n, d), 1

    def augmented(y: Array, t: Array) -> Array:
        return rate(y[:, :d], t)

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
    return LikelihoodResult(lp0 - delta, lp0, delta, x0, u.calls, stderr, method)


def _exact(field: Any, u: Any, divergence: Any, n: int, d: int) -> Any:
    if divergence is None:
        for cand in (field, _owner(field)):
            if callable(getattr(cand, "divergence", None)):
                divergence = cand.divergence
                break
        else:
            raise TypeError(
                "divergence is None and the field has no divergence method: pass "
                "divergence=callable or divergence='hutchinson'"
            )
    if not callable(divergence):
        raise TypeError(f"divergence must be callable, got {type(divergence).__name__}")
    owner = _owner(field)
    fused = (
        isinstance(owner, MarginalPath)
        and _owner(divergence) is owner
        and getattr(field, "__name__", "") == "vector_field"
        and getattr(divergence, "__name__", "") == "divergence"
    )

    def rate(x: Array, t: Array) -> Array:
        xp = namespace(x)
        if fused:
            # One pass of the marginal engine shares the responsibilities between u and div u.
            u.calls += 1
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
    n_probes: Any, probe: Any, rng: Any, shape: tuple[int, int], xp: Namespace, dev: Any, dt: Any
) -> list[Array]:
    if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) or n_probes < 1:
        raise ValueError(f"n_probes must be an int >= 1, got {n_probes!r}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    if rng is None:
        raise ValueError("rng (numpy.random.Generator or int seed) is required for Hutchinson")
    g = rng_from(rng)
    out = []
    for _ in range(int(n_probes)):
        if probe == "rademacher":
            v = 2.0 * g.integers(0, 2, size=shape).astype(np.float64) - 1.0
        else:
            v = g.standard_normal(shape)
        out.append(from_numpy(v, xp, dev, dt))
    return out


def _hutchinson(u: _CheckedField, probes: list[Array], source: Any, fd_step: Any) -> Any:
    """Rate function (u, vᵀ∇u v for each probe v) of the augmented state."""
    h = None
    if fd_step is not None and not (
        isinstance(fd_step, float) and math.isfinite(fd_step) and fd_step > 0
    ):
        raise ValueError(f"fd_step must be a float > 0, got {fd_step!r}")

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
                    h = fd_step if fd_step is not None else float(xp.finfo(x.dtype).eps) ** (1 / 3)
                jv = (u(x + h * v, t) - u(x - h * v, t)) / (2 * h)
            cols.append(xp.sum(v * jv, axis=1)[:, None])
        return xp.concat(cols, axis=1)

    return rate
