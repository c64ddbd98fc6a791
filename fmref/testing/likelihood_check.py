"""Check a user's flow likelihood part by part: log p_1(x1), the point X_0 and ∫ div u.

A flow's likelihood is log p_1(x1) = log p_0(X_0) − ∫_0^1 div u_t(X_t) dt, with X_0 reached
by integrating the ODE backwards from X_1 = x1 (docs/theory.md).
:func:`assert_flow_likelihood_close` compares the user's log p_1 with the exact log p_data,
and, when the user's function also returns them, X_0 and ∫ div u with fmref's own backward
solve of the exact field (DOP853 at rtol = atol = 1e-10). When log p_1 is wrong it names the
usual culprits from the numbers: a constant offset of d/2·log 2π (the normaliser of log p_0
missing or doubled) and the sign of the divergence term.

Default tolerances (:data:`LIKELIHOOD_TOLERANCES`) follow the precision of the inputs the user
is given (``like=``), not of what comes back, and are tight enough in float32 that stopping the
backward solve at t = 1 − 1e-3 instead of 1 (a "t → 1 clamp") fails on the default mixture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._check import check_callable
from ..likelihood import log_likelihood
from ..marginals import MarginalPath
from ..mixtures import rng_from
from ._compare import (
    Converter,
    back,
    check,
    check_n,
    check_q,
    converter,
    default_tolerance,
    dtype_name,
    fmt,
    user_inputs,
)

__all__ = ["LIKELIHOOD_TOLERANCES", "assert_flow_likelihood_close"]

#: dtype name → (rtol, atol) of :func:`assert_flow_likelihood_close`. float32: RK4 with 16 to
#: 128 steps of a float32 implementation errs by 2e-6 to 3e-5 on log p (d = 2, |log p| ≈ 4);
#: 5e-5 + 5e-5·|log p| ≈ 3e-4 leaves 10× room and refuses a solve started at t = 1 − 1e-3
#: (error ≈ 7e-3). float64: 1e-5 + 1e-6 admits an RK4 solve of ≥ 32 steps.
LIKELIHOOD_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-6, 1e-5),
    "float32": (5e-5, 5e-5),
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
}

_LOG_2PI = float(np.log(2 * np.pi))

_PRECISION = {"float64": 3, "float32": 2, "float16": 1, "bfloat16": 1}


def _tolerance(dtype: Any, rtol: float | None, atol: float | None) -> tuple[float, float]:
    r0, a0 = LIKELIHOOD_TOLERANCES.get(dtype_name(dtype), LIKELIHOOD_TOLERANCES["float32"])
    return default_tolerance(dtype, r0 if rtol is None else rtol, a0 if atol is None else atol)


def _parts(out: Any) -> tuple[Any, Any, Any]:
    """(log_prob, x0 or None, delta or None) from what the user's function returned."""
    if isinstance(out, tuple | list):
        if len(out) != 3:
            raise TypeError(
                f"fn returned a sequence of {len(out)} items; expected log_prob (n,) or "
                "(log_prob, x0, delta)"
            )
        return out[0], out[1], out[2]
    if isinstance(out, Mapping):
        if "log_prob" not in out:
            raise TypeError(f"fn returned a mapping without 'log_prob' (keys {sorted(out)})")
        return out["log_prob"], out.get("x0"), out.get("delta")
    if hasattr(out, "log_prob") and not callable(out.log_prob):
        return out.log_prob, getattr(out, "x0", None), getattr(out, "delta", None)
    return out, None, None


def _diagnose(
    diff: np.ndarray,
    tol: np.ndarray,
    d: int,
    delta_exp: np.ndarray,
    delta_act: np.ndarray | None,
) -> list[str]:
    """Name the mistake that the error of log p_1 shows, where it is a recognisable one."""
    notes = []
    c = float(np.median(diff))
    constant = bool(np.all(np.abs(diff - c) <= tol))
    norm = 0.5 * d * _LOG_2PI
    if constant and abs(abs(c) - norm) <= float(np.min(tol)):
        how = "missing" if c > 0 else "counted twice"
        notes.append(
            f"a constant offset of d/2·log 2π = {norm:.10g} (actual − expected = {c:.10g}): the "
            f"normaliser −d/2·log 2π of log p_0 is {how}"
        )
    elif constant and abs(c) > float(np.min(tol)):
        # Only an offset the tolerance cannot absorb is a finding (a tiny common error is not).
        notes.append(f"a constant offset: actual − expected = {c:.10g} at every point")
    moving = float(np.max(np.abs(delta_exp))) > float(np.max(tol))
    if moving and bool(np.all(np.abs(diff - 2 * delta_exp) <= tol + 1e-3 * np.abs(delta_exp))):
        notes.append(
            "the sign of the divergence term: actual − expected = 2·∫ div u, i.e. "
            "log p_0(X_0) + ∫_0^1 div u_t dt instead of − ∫_0^1 div u_t dt"
        )
    if (
        delta_act is not None
        and moving
        and bool(np.all(np.abs(delta_act + delta_exp) <= tol + 1e-3 * np.abs(delta_exp)))
    ):
        notes.append(
            "the sign of the divergence term: the returned ∫ div u is −(exact ∫_0^1 div u_t dt) "
            "(integrated from 1 down to 0 and not negated?)"
        )
    return notes


def assert_flow_likelihood_close(
    fn: Callable[[Any], Any],
    marginal: MarginalPath,
    *,
    n: int = 64,
    x: Any = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
    quantile: float = 1.0,
) -> None:
    """Assert a flow's likelihood ``fn(x1)`` and, if returned, its X_0 and ∫ div u are exact.

    ``fn(x1)`` gets x1 (n, d) in the user's library (``like=`` or ``to_impl=``; exact samples
    of p_data, or ``x``) and returns either log p_1(x1) (n,), or the three parts
    ``(log_prob, x0, delta)`` — a tuple, a mapping with those keys, or an object with those
    attributes such as :class:`fmref.LikelihoodResult` — where x0 (n, d) is X_0 reached
    backwards along the ODE of ``marginal.vector_field`` and delta (n,) is ∫_0^1 div u_t(X_t) dt,
    so that log_prob = log p_0(x0) − delta.

    Each returned part is compared with the exact value: log p_1 = log p_data in closed form,
    X_0 and ∫ div u from fmref's backward DOP853 solve at rtol = atol = 1e-10. A failure names
    the parts that differ, and says "constant offset of d/2·log 2π" or "sign of the divergence
    term" when that is what the numbers show. The tolerance follows the dtype of the inputs
    (:data:`LIKELIHOOD_TOLERANCES`); a result of lower precision than its inputs fails.

    ``marginal`` must have positive-definite covariances (the field is then defined at t = 1).
    ``quantile`` < 1 (e.g. for Hutchinson estimates) requires only that fraction of points
    within tolerance.
    """
    check_callable(fn, "fn", "fn(x1) -> log_prob or (log_prob, x0, delta)")
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be an fmref MarginalPath, got {type(marginal).__name__}")
    data = marginal.data
    if float(np.min(data.eigenvalues)) <= 0.0:
        raise ValueError(
            "marginal: the data covariances must be positive definite (the flow's field is "
            "singular at t = 1 for Dirac or degenerate components)"
        )
    quantile = check_q(quantile)
    d = data.dim
    if x is None:
        x = data.sample(check_n(n), rng=rng_from(rng))
    x = np.asarray(back(x, "x", tuple(np.shape(x))), dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {x.shape}")
    m = x.shape[0]
    xu, xs = user_inputs(converter(like, to_impl), x)
    asked = getattr(xu, "dtype", np.float64)
    lp_u, x0_u, delta_u = _parts(fn(xu))
    got = getattr(lp_u, "dtype", asked)
    if _PRECISION.get(dtype_name(got), 2) < _PRECISION.get(dtype_name(asked), 2):
        raise AssertionError(
            f"assert_flow_likelihood_close: fn returned log_prob of dtype {dtype_name(got)} for "
            f"inputs of dtype {dtype_name(asked)}: a lower precision than asked"
        )
    rt, at = _tolerance(asked, rtol, atol)

    lp_exp = np.asarray(data.log_prob(xs), dtype=np.float64)
    ref = log_likelihood(
        marginal.vector_field,
        xs,
        log_p0=lambda z: marginal.log_prob(z, 0.0),
        method="dop853",
        rtol=1e-10,
        atol=1e-10,
    )
    x0_exp = np.asarray(ref.x0, dtype=np.float64)
    delta_exp = np.asarray(ref.delta, dtype=np.float64)

    lp_a = back(lp_u, "fn (log_prob)", (m,))
    x0_a = None if x0_u is None else back(x0_u, "fn (x0)", (m, d))
    delta_a = None if delta_u is None else back(delta_u, "fn (delta)", (m,))

    failures = []
    for name, actual, expected in (
        ("log_prob", lp_a, lp_exp),
        ("x0", x0_a, x0_exp),
        ("delta = ∫ div u dt", delta_a, delta_exp),
    ):
        if actual is None:
            continue
        try:
            check(
                f"[{name}]",
                actual,
                expected,
                rt,
                at,
                quantile,
                lambda i: f"x1 = {fmt(xs[i])}, exact X_0 = {fmt(x0_exp[i])}",
            )
        except AssertionError as e:
            failures.append(str(e))
    if not failures:
        return
    with np.errstate(invalid="ignore"):
        notes = _diagnose(lp_a - lp_exp, at + rt * np.abs(lp_exp), d, delta_exp, delta_a)
    head = "assert_flow_likelihood_close: " + (
        "the numbers show " + "; and ".join(notes) if notes else "the likelihood differs"
    )
    raise AssertionError(head + "\n" + "\n".join(failures))
