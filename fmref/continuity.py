"""The continuity equation ∂_t p_t = −div(p_t u_t): a check that can fail, and its identity.

Three routes, from strongest to weakest evidence:

- :func:`check` (log form, any field): ∂_t log p_t, div u_t and ∇log p_t each by
  Richardson-extrapolated differences of ``log_prob`` and of the field, so nothing but the
  density p_t and the field u_t enters. A wrong field fails it; so would a wrong density.
- :func:`numerical_residual` (density form, any field): ∂_t p_t + div(p_t u_t) by second-order
  differences with fixed steps, for convergence-order studies.
- :func:`identity_residual`: fmref's own closed forms for ∂_t log p_t, div u_t and ∇log p_t.
  Their per-component terms cancel algebraically, so it is zero for any value of the shared
  per-component coefficients: an identity of the algebra, never evidence that u_t is right.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from ._xp import Array, Namespace, device, namespace, points, times
from .marginals import MarginalPath

__all__ = [
    "ContinuityCheck",
    "LogFormCheck",
    "check",
    "identity_residual",
    "numerical_residual",
    "residual",
]

Field = Callable[[Array, Array], Array]

# Difference stencils (offsets in units of h, weights) for a first derivative. Central ones are
# used where the stencil fits in [0, 1]; one-sided ones are anchored at t itself (not at the
# end point) so their error stays O(h^order) for t within a stencil of 0 or 1.
_CENTRAL = {2: ((-1, 1), (-0.5, 0.5)), 4: ((-2, -1, 1, 2), (1 / 12, -8 / 12, 8 / 12, -1 / 12))}
_ONE_SIDED = {
    2: ((0, 1, 2), (-1.5, 2.0, -0.5)),
    4: ((0, 1, 2, 3, 4), (-25 / 12, 48 / 12, -36 / 12, 16 / 12, -3 / 12)),
}
#: Floor of the round-off term, in units of the dtype's ε times the largest value differenced:
#: log_prob and the field are accurate to tens of ε (quadratic forms, logsumexp); 32 keeps the
#: exact field's residual below a quarter of the bound on every mixture and schedule tested.
_ROUNDING = 32.0


def identity_residual(marginal: MarginalPath, x: Any, t: Any) -> Array:
    """Return the closed-form identity ∂_t log p_t + div u_t + u_t·∇log p_t, shape (n,).

    All three terms come from fmref's own per-component algebra (c = αα̇λ + ββ̇ enters
    ∂_t log N_k and s_k·u_k with opposite signs), so the sum is zero up to rounding *whatever*
    those terms are: a wrong u_t leaves it at 1e-16. It checks the bookkeeping of the closed
    forms (responsibilities, rotations, chunking, dtypes, backends), not the mathematics. Use
    :func:`check` for evidence that a field satisfies the continuity equation.
    """
    r = marginal.evaluate(x, t, ("dlog_prob_dt", "divergence", "vector_field", "score"))
    xp = namespace(r["score"])
    return r["dlog_prob_dt"] + r["divergence"] + xp.sum(r["vector_field"] * r["score"], axis=1)


def residual(marginal: MarginalPath, x: Any, t: Any) -> Array:
    """Return :func:`identity_residual` (deprecated: its name presented an identity as a check).

    .. deprecated:: 0.2
        Use :func:`identity_residual` for the algebraic identity, or :func:`check` for a test
        of the continuity equation that a wrong field fails.
    """
    warnings.warn(
        "fmref.continuity.residual is an algebraic identity (zero by construction); use "
        "continuity.identity_residual for it, or continuity.check for a check that can fail",
        DeprecationWarning,
        stacklevel=2,
    )
    return identity_residual(marginal, x, t)


@final
@dataclass(frozen=True)
class LogFormCheck:
    """The log-form continuity residual of a field against the exact p_t, each shape (n,).

    ``residual = dlog_prob_dt + divergence + u_dot_score``, every term by differences of
    ``log_prob`` or of the field. ``error`` is the a-posteriori bound on the residual's
    discretisation and round-off error (see :func:`check`); a point passes when
    ``|residual| <= error``. ``scale = |∂_t log p| + |div u| + |u·∇log p|`` sizes the terms,
    so ``error / scale`` says how small a relative defect the check can resolve. ``h_t`` and
    ``h_x`` are the (largest) steps used per point.
    """

    residual: Array
    dlog_prob_dt: Array
    divergence: Array
    u_dot_score: Array
    error: Array
    scale: Array
    h_t: Array
    h_x: Array

    @property
    def passed(self) -> Array:
        """Per point: |residual| ≤ error, a boolean array of shape (n,)."""
        return abs(self.residual) <= self.error

    @property
    def ok(self) -> bool:
        """Whether every point passes."""
        xp = namespace(self.residual)
        return bool(xp.all(self.passed))


def check(
    marginal: MarginalPath,
    x: Any,
    t: Any,
    *,
    field: Field | None = None,
    step: float | None = None,
) -> LogFormCheck:
    """Check ∂_t log p_t + div u_t + u_t·∇log p_t = 0 for ``field`` against the exact p_t.

    Parameters
    ----------
    marginal : MarginalPath, the exact p_t (only its ``log_prob`` is evaluated).
    x : points, shape (n, d); t : a float or (n,) array in [0, 1] (t < 1 for Dirac data).
    field : ``field(x, t)`` with x (m, d) and t (m,) in x's namespace, returning (m, d); the
        marginal's own ``vector_field`` when None.
    step : relative step h; the default ε^{1/5} of x's dtype (7e-4 in float64, 0.04 in
        float32) balances the h⁴ truncation of the stencils against ε/h round-off.

    Returns
    -------
    LogFormCheck with the residual, its three terms and its error bound per point.

    Notes
    -----
    Each term is a derivative D taken twice, with a fourth-order stencil at steps h and h/2
    (central, or one-sided anchored at t where the central stencil leaves [0, 1]), and
    Richardson-extrapolated: D = D_{h/2} + (D_{h/2} − D_h)/15. The error bound is
    |D_{h/2} − D_h| (15 times the truncation error of D_{h/2} when the h⁴ term dominates, and
    larger still than that of D) plus round-off, 32 ε (max|f| + |x|·|D|)/(h/2) with |x| the
    abscissa (1 for t), summed over the terms (the score's weighted by |u_i|). Steps follow
    p_t's own scales, from the schedule and the mixture's eigenvalues: h_x = h σ_t with
    σ_t² = α_t² λ_min + β_t² (the narrowest component), and
    h_t = h / (1 + max_λ |v̇_λ/v_λ| + |α̇_t| max_k ‖μ_k‖ / σ_t) with v_λ = α_t² λ + β_t², the
    rates at which p_t's widths and centres move (so Dirac data near t = 1 get h_t ∝ β_t).

    Measured on isotropic, diagonal, full and Dirac mixtures, seven schedules and t from 0 to
    1 (1 − 1e-4 for Dirac): the exact field's |residual| stays below 0.3 ``error``, and
    ``error`` is 1e-9 to 1e-5 of ``scale`` in float64, so a field wrong by a relative δ, which
    leaves about δ·|∂_t log p_t| (for u ↦ (1 + δ)u exactly −δ ∂_t log p_t), fails for δ well
    below 1e-4. In float32 ``error`` is about 1e-3 of ``scale``: a 1 % defect still fails at
    most points. Where p_t is stationary (α̇ = ββ̇ = 0: Polynomial(p > 1) at t = 0, Cosine at
    t = 1) every term vanishes and there is nothing to resolve; ``error / scale`` says so.
    """
    if field is None:
        field = marginal.vector_field
    x, xp = points(x, marginal.dim)
    n, d = x.shape
    tt = times(t, n, xp, x.dtype, device(x))
    eps = float(xp.finfo(x.dtype).eps)
    if step is None:
        step = eps ** (1 / 5)
    elif isinstance(step, bool) or not isinstance(step, (int, float, np.floating, np.integer)):
        raise TypeError(f"step must be a float, got {type(step).__name__}")
    step = float(step)
    if not 0 < step <= 0.05:
        raise ValueError(f"step must be a float in (0, 0.05], got {step!r}")
    # p_t must be a density at every t asked for (not Dirac data at t = 1) before steps are
    # scaled to its widths; log_prob raises the ValueError that says so.
    marginal.log_prob(x, tt)
    h_x, h_t = _steps(marginal, tt, step, xp)

    def log_p(xs: Array, ts: Array) -> Array:
        return marginal.log_prob(xs, ts)

    def u_of(xs: Array, ts: Array) -> Array:
        u = field(xs, ts)
        if tuple(u.shape) != (xs.shape[0], d):
            raise ValueError(f"field must return shape (m, {d}) for m points, got {u.shape}")
        return u

    at_t, at_x = xp.ones_like(tt), xp.max(xp.abs(x), axis=1)
    dt, err_dt = _richardson(lambda h: _d_dt(log_p, x, tt, h, 4, xp), h_t, at_t, eps)
    grad, err_grad = _richardson(lambda h: _d_dx(log_p, x, tt, h, 4, xp), h_x, at_x, eps)
    jac, err_jac = _richardson(lambda h: _d_dx(u_of, x, tt, h, 4, xp), h_x, at_x, eps)
    # grad: (d, n); jac: (d, n, d), axis 0 the direction differenced, the last the component.
    div = sum(jac[i, :, i] for i in range(d))
    err_div = sum(err_jac[i, :, i] for i in range(d))
    u = u_of(x, tt)
    u_s = xp.sum(u * xp.permute_dims(grad, (1, 0)), axis=1)
    err_us = xp.sum(xp.abs(u) * xp.permute_dims(err_grad, (1, 0)), axis=1)
    return LogFormCheck(
        residual=dt + div + u_s,
        dlog_prob_dt=dt,
        divergence=div,
        u_dot_score=u_s,
        error=err_dt + err_div + err_us,
        scale=xp.abs(dt) + xp.abs(div) + xp.abs(u_s),
        h_t=h_t,
        h_x=h_x,
    )


def _steps(marginal: MarginalPath, tt: Array, step: float, xp: Namespace) -> tuple[Array, Array]:
    """(h_x, h_t) per point, relative to p_t's narrowest width and fastest motion at t."""
    lam = marginal.data.eigenvalues
    lo, hi = float(np.min(lam)), float(np.max(lam))
    reach = float(np.max(np.linalg.norm(marginal.data.means, axis=1)))
    sv = marginal.schedule(tt)
    a2, b2 = sv.alpha * sv.alpha, sv.beta * sv.beta
    sigma = xp.sqrt(a2 * lo + b2)
    rate = xp.abs(sv.alpha_dot) * reach / sigma
    for lm in (lo, hi):
        rate = rate + xp.abs(2 * sv.alpha * sv.alpha_dot * lm + 2 * sv.beta_beta_dot) / (
            a2 * lm + b2
        )
    h_t = xp.minimum(step / (1 + rate), xp.full_like(tt, step))
    return step * sigma, h_t


def _richardson(
    diff: Callable[[Array], tuple[Array, Array]], h: Array, at: Array, eps: float
) -> tuple[Array, Array]:
    """Extrapolate a fourth-order difference from steps h and h/2; return (value, error bound).

    ``diff(h)`` returns (derivative, max |f| over the stencil); ``h`` and ``at`` (a bound on
    |abscissa|) are per point. The h⁴ terms cancel in D_{h/2} + (D_{h/2} − D_h)/15, and
    |D_{h/2} − D_h| bounds the truncation error. Round-off adds two terms: f itself is accurate
    to tens of ε·|f|, and the nodes t + jh (x + jh) are rounded to ε·at, which moves the
    step, and so the derivative, by a relative ε·at/h: it dominates where h ≪ |t| (Dirac data
    near t = 1, whose time scale is β_t).
    """
    coarse, _ = diff(h)
    fine, size = diff(h / 2)
    gap = fine - coarse
    hb, ab = (h, at) if gap.ndim == 1 else (_expand(h, gap), _expand(at, gap))
    rounding = _ROUNDING * eps * (size + ab * abs(fine)) / (hb / 2)
    return fine + gap / 15, abs(gap) + rounding


def _expand(h: Array, like: Array) -> Array:
    """Broadcast a per-point (n,) array against (d, n) or (d, n, d)."""
    return h[None, :] if like.ndim == 2 else h[None, :, None]


def _stencil(order: int, tt: Array, h: Array, xp: Namespace) -> tuple[list[Array], list[float]]:
    """Evaluation times and weights of a first-derivative stencil in t, per point.

    Central where t ± (order/2)h lies in [0, 1]; else one-sided towards the interior, anchored
    at t. ``h`` is a float or an (n,) array.
    """
    offs, wts = _CENTRAL[order]
    reach = (order // 2) * h
    fwd, bwd = tt - reach < 0, tt + reach > 1
    if not bool(xp.any(fwd | bwd)):
        return [tt + o * h for o in offs], list(wts)
    # Both stencils on every point, selected per point; the central one evaluated at a clipped
    # t so that it never leaves [0, 1] where it is not used.
    zero = xp.zeros_like(tt)
    tc = xp.where(fwd, zero + reach, xp.where(bwd, 1 - (zero + reach), tt))
    sgn = xp.where(bwd, -xp.ones_like(tt), xp.ones_like(tt))
    one = fwd | bwd
    ts, ws = [], []
    for o, w in zip(offs, wts, strict=True):
        ts.append(xp.where(one, tt, tc + o * h))
        ws.append(xp.where(one, zero, zero + w))
    oo, ow = _ONE_SIDED[order]
    for o, w in zip(oo, ow, strict=True):
        ts.append(xp.where(one, tt + sgn * (o * h), tc))
        ws.append(xp.where(one, sgn * w, zero))
    return ts, ws


def _d_dt(
    f: Field, x: Array, tt: Array, h: Array, order: int, xp: Namespace
) -> tuple[Array, Array]:
    """(∂_t f(x, t), max |f| over the stencil) for f returning (m,), in one call of f."""
    ts, ws = _stencil(order, tt, h, xp)
    m = len(ts)
    n = x.shape[0]
    vals = f(xp.concat([x] * m, axis=0), xp.concat(ts, axis=0))
    vals = xp.reshape(vals, (m, n))
    total = sum(ws[j] * vals[j, :] for j in range(m))
    return total / h, xp.max(xp.abs(vals), axis=0)


def _d_dx(f: Field, x: Array, tt: Array, h: Any, order: int, xp: Namespace) -> tuple[Array, Array]:
    """(∂f/∂x_i for each i, max |f| per point) by a central stencil, in one call of f.

    Returns shape (d, n, *f's trailing shape); ``h`` is a float or an (n,) array.
    """
    offs, wts = _CENTRAL[order]
    n, d = x.shape
    eye = xp.eye(d, dtype=x.dtype, device=device(x))
    hh = h if isinstance(h, float) else h[None, :, None]
    shifted = [x[None, ...] + (o * hh) * eye[:, None, :] for o in offs]  # each (d, n, d)
    xs = xp.reshape(xp.concat(shifted, axis=0), (-1, d))
    ts = xp.reshape(xp.broadcast_to(tt[None, :], (len(offs) * d, n)), (-1,))
    vals = f(xs, ts)
    vals = xp.reshape(vals, (len(offs), d, n, *vals.shape[1:]))
    total = sum(w * vals[j, ...] for j, w in enumerate(wts))
    size = xp.max(xp.abs(xp.reshape(vals, (len(offs) * d, n, -1))), axis=(0, 2))
    hb = h if isinstance(h, float) else (h[None, :] if total.ndim == 2 else h[None, :, None])
    return total / hb, _expand(size, total) if total.ndim == 3 else size[None, :]


@final
@dataclass(frozen=True)
class ContinuityCheck:
    """Finite-difference terms of the continuity equation at each point, each shape (n,).

    ``residual = dp_dt + div_pu``; ``scale = |dp_dt| + |div_pu|`` makes it relative.
    """

    residual: Array
    dp_dt: Array
    div_pu: Array
    scale: Array
    h_t: float
    h_x: float


def numerical_residual(
    marginal: MarginalPath,
    field: Field,
    x: Any,
    t: Any,
    *,
    h_t: float = 1e-4,
    h_x: float = 1e-4,
) -> ContinuityCheck:
    """Check any vector field ``field(x, t)`` against the exact p_t by central differences.

    ∂_t p_t(x) ≈ [p_{t+h}(x) − p_{t−h}(x)] / 2h_t and div(p_t u)(x) ≈ Σ_i [(p u_i)(x + h e_i)
    − (p u_i)(x − h e_i)] / 2h_x; both errors are O(h²). Within h_t of t = 0 or 1 the time
    derivative uses the second-order one-sided stencil (−3f(t) + 4f(t ± h) − f(t ± 2h))/(±2h).
    The defaults h = 1e-4 sit near the float64 optimum ε^{1/3} ≈ 6e-6 times the scale of p's
    features, keeping truncation (∝ h²) and rounding (∝ ε/h) errors both around 1e-8 relative
    for features of unit scale. Fixed steps and a known order make it the route for
    convergence studies; :func:`check` is the one with an error bound.

    ``field`` receives x of shape (m, d) and t of shape (m,) in x's namespace and must return
    (m, d). The exact field gives a residual of finite-difference size that shrinks as h²; a
    wrong field (a conditional field, a rescaled field) leaves an O(1) residual.
    """
    for name, h in (("h_t", h_t), ("h_x", h_x)):
        if not (isinstance(h, float) and 0 < h < 0.25):
            raise ValueError(f"{name} must be a float in (0, 0.25), got {h!r}")
    x, xp = points(x, marginal.dim)
    n, d = x.shape
    tt = times(t, n, xp, x.dtype, device(x))

    def p_at(xs: Array, ts: Array) -> Array:
        return xp.exp(marginal.log_prob(xs, ts))

    def pu_at(xs: Array, ts: Array) -> Array:
        u = field(xs, ts)
        if tuple(u.shape) != (xs.shape[0], d):
            raise ValueError(f"field must return shape (m, {d}) for m points, got {u.shape}")
        return p_at(xs, ts)[:, None] * u

    dp_dt, _ = _d_dt(p_at, x, tt, h_t, 2, xp)
    jac, _ = _d_dx(pu_at, x, tt, h_x, 2, xp)  # (d, n, d): component i differenced along i
    div_pu = sum(jac[i, :, i] for i in range(d))
    return ContinuityCheck(
        residual=dp_dt + div_pu,
        dp_dt=dp_dt,
        div_pu=div_pu,
        scale=xp.abs(dp_dt) + xp.abs(div_pu),
        h_t=h_t,
        h_x=h_x,
    )
