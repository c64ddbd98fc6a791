"""Check a user's fixed-step ODE sampler against fmref's methods on an exact marginal field.

The sampler follows the protocol ``sampler(field, x0, steps) -> x1``: it integrates
dx/dt = field(x, t) from t = 0 to t = 1 in ``steps`` steps, calling ``field(x, t)`` with x of
shape (n, d) and t of shape (n,) in x's namespace and dtype. :func:`assert_sampler_close`
hands it fmref's exact field u_t of a marginal path, records every call (its time, the dtype
of x) and compares

1. the calls with those of the reference method of :data:`fmref.samplers.METHODS` on the
   uniform grid of ``steps`` steps (step i, stage j is a call at t_i + c_j h, c_j the stage's
   node), which catches a grid that stops short of t = 1 (Algorithm 1's ``for i = 1, …, n − 1``
   read literally), a midpoint stage at t instead of t + h/2, a computation in a lower
   precision than x0's;
2. x1 with :func:`fmref.samplers.integrate` (``method=reference``) from the same x0, which
   catches wrong stage weights and wrong stage inputs at the right times;
3. with ``order=``, the observed order of the global error against the closed-form flow of
   Gaussian data (:func:`fmref.exact.gaussian_flow`, docs/theory.md §11).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from .. import _ode
from .._check import check_callable, check_float, check_int
from .._xp import namespace
from ..exact import gaussian_flow
from ..marginals import MarginalPath
from ..mixtures import GaussianMixture, rng_from
from ..samplers import METHODS, integrate
from ..schedules import Linear
from ._cases import oracle_mixture
from ._compare import (
    Converter,
    back,
    check,
    converter,
    default_tolerance,
    dtype_name,
    fmt,
    user_inputs,
)

__all__ = ["assert_sampler_close", "sampler_test_marginal"]

#: Steps of the observed-order fit: the sampler is run at each, on Gaussian data.
ORDER_STEPS = (4, 8, 16, 32)


def sampler_test_marginal() -> MarginalPath:
    """Return the default marginal path of :func:`assert_sampler_close`.

    The testing kit's one default mixture, :func:`~fmref.testing.oracle_mixture` in d = 2
    (unequal weights, full anisotropic covariances), on the Linear schedule: a weight or
    covariance slip in the field the sampler sees would change x1, and the field is curved
    enough that the methods differ at 8 steps.
    """
    return MarginalPath(oracle_mixture(2), Linear())


def _gaussian_for_order(marginal: MarginalPath) -> MarginalPath:
    """The single-Gaussian path the order fit uses: ``marginal`` if its data is one Gaussian."""
    if marginal.data.n_components == 1:
        return marginal
    cov = np.array([[0.7, 0.3], [0.3, 0.4]])
    return MarginalPath(GaussianMixture.gaussian(np.array([1.0, -0.5]), cov), marginal.path)


class _Recorder:
    """The field handed to the sampler: fmref's exact u_t, recording each call."""

    def __init__(self, marginal: MarginalPath, n: int, x_dtype: Any) -> None:
        self.marginal, self.n, self.x_dtype = marginal, n, x_dtype
        self.times: list[float] = []
        self.problems: list[str] = []

    def __call__(self, x: Any, t: Any) -> Any:
        j = len(self.times)
        shape = tuple(getattr(x, "shape", ()))
        d = self.marginal.dim
        if len(shape) != 2 or shape[1] != d:
            raise AssertionError(
                f"assert_sampler_close: call {j}: the sampler passed x of shape {shape}; the "
                f"protocol is field(x, t) with x of shape (n, {d})"
            )
        xp = namespace(x)
        t_shape = tuple(getattr(t, "shape", ()))
        if t_shape != (shape[0],):
            raise AssertionError(
                f"assert_sampler_close: call {j}: the sampler passed t of shape {t_shape} "
                f"({type(t).__name__}); the protocol is t of shape ({shape[0]},) in x's namespace"
            )
        if namespace(t) is not xp:
            raise AssertionError(
                f"assert_sampler_close: call {j}: t is a {type(t).__name__}, x a "
                f"{type(x).__name__}; the protocol is t in x's namespace"
            )
        tn = back(t, "t", (shape[0],))
        if not np.all(tn == tn[0]):
            self.problems.append(
                f"call {j}: t differs across rows (from {tn.min():.10g} to {tn.max():.10g}); "
                "a sampler moves every row to the same time"
            )
        if x.dtype != self.x_dtype:
            self.problems.append(
                f"call {j} (t = {tn[0]:.10g}): x has dtype {x.dtype}, x0 had {self.x_dtype}: "
                "the sampler computes in another precision than it was given"
            )
        self.times.append(float(tn[0]))
        return self.marginal.vector_field(x, xp.astype(t, x.dtype))


def _expected_calls(reference: str, steps: int) -> list[tuple[int, int, float]]:
    """(step, stage, time) of each field call of the reference method, in call order."""
    nodes = METHODS[reference].nodes
    assert nodes is not None  # refused earlier for the adaptive methods
    g = _ode.time_grid(steps, 0.0, 1.0, None)
    h = 1.0 / steps
    return [
        (i, j, float(g[i] + float(Fraction(c)) * h))
        for i in range(steps)
        for j, c in enumerate(nodes)
    ]


def _eps(dtype: Any) -> float:
    """Machine epsilon of a dtype of any array library (float32's for unknown ones)."""
    return {"float64": 2.0**-52, "float16": 2.0**-10, "bfloat16": 2.0**-7}.get(
        dtype_name(dtype), 2.0**-23
    )


def _time_tolerance(dtype: Any, steps: int) -> float:
    # t_i accumulated as t += h in the sampler's dtype drifts by ~steps·eps.
    return max(8, 2 * steps) * _eps(dtype)


def _call_report(
    got: Sequence[float], want: list[tuple[int, int, float]], reference: str, steps: int, tol: float
) -> str | None:
    """Describe how the recorded call times differ from the reference's, or None."""
    k = len(METHODS[reference].nodes or ())
    head = (
        f"{reference!r} with steps={steps} calls the field {len(want)} times "
        f"({k} per step, stage nodes {[str(c) for c in METHODS[reference].nodes or ()]} of h = "
        f"1/{steps}) and ends at t = 1"
    )
    first = next(
        (j for j, (g, w) in enumerate(zip(got, want, strict=False)) if abs(g - w[2]) > tol),
        None,
    )
    if first is None and len(got) == len(want):
        return None
    last_want = want[-1][2]
    if first is None and len(got) < len(want):
        missing = want[len(got)]
        return (
            f"the sampler's grid does not reach t = 1: it made {len(got)} field calls, the last "
            f"at t = {got[-1] if got else float('nan'):.10g}, and stopped; {head}. The first "
            f"missing call is step {missing[0]}, stage {missing[1]} at t = {missing[2]:.10g} "
            "(an Euler loop `for i in range(1, n)` does n − 1 steps)"
        )
    if first is None:
        return (
            f"the sampler made {len(got)} field calls, {len(got) - len(want)} more than the "
            f"reference; the extra calls are at t = {fmt(np.asarray(got[len(want) :]))}; {head}"
        )
    i, j, tw = want[first]
    msg = (
        f"field call {first} is at t = {got[first]:.10g}; the reference's call {first} is "
        f"step {i}, stage {j} at t = t_{i} + {METHODS[reference].nodes[j]}·h = {tw:.10g} "  # type: ignore[index]
        f"(|Δt| = {abs(got[first] - tw):.3g} > {tol:.3g}); {head}.\n"
        f"  calls of step {i}: sampler {fmt(np.asarray(got[first - j : first - j + k]))}, "
        f"reference {fmt(np.asarray([w[2] for w in want[first - j : first - j + k]]))}"
    )
    starts = [(a, w[2]) for a, w in zip(got[::k], want[::k], strict=False)]
    if any(abs(a - w) > tol for a, w in starts):
        # The step start times themselves are off: the grid, not a stage, is wrong.
        msg += (
            f"\n  the sampler's steps start at {fmt(np.asarray([a for a, _ in starts]))}, the "
            f"uniform grid's at {fmt(np.asarray([w for _, w in starts]))}"
        )
        if max(got) < last_want - tol:
            msg += (
                f"\n  the sampler's grid does not reach t = 1: its last call is at "
                f"t = {max(got):.10g}, the reference's at {last_want:.10g}"
            )
    return msg


def _run(sampler: Callable[..., Any], rec: _Recorder, x0u: Any, steps: int, n: int, d: int) -> Any:
    out = sampler(rec, x0u, steps)
    if tuple(getattr(out, "shape", ())) != (n, d):
        raise AssertionError(
            f"assert_sampler_close: sampler(field, x0, {steps}) returned "
            f"{type(out).__name__} of shape {tuple(getattr(out, 'shape', ()))}; expected x1 of "
            f"shape ({n}, {d})"
        )
    return out


def _observed_order(
    sampler: Callable[..., Any],
    reference: str,
    marginal: MarginalPath,
    expected_order: float,
    order_steps: Sequence[int],
    n: int,
    g: np.random.Generator,
    conv: Converter,
) -> None:
    gm = _gaussian_for_order(marginal)
    data = gm.data
    x0u, x0s = user_inputs(conv, gm.sample(n, 0.0, rng=g))
    exact = np.asarray(
        gaussian_flow(data.means[0], data.full_covs()[0], gm.path, x0s, 1.0, 0.0), dtype=np.float64
    )
    eps = _eps(x0u.dtype)
    rows = []
    for s in order_steps:
        rec = _Recorder(gm, n, x0u.dtype)
        x1 = back(_run(sampler, rec, x0u, s, n, gm.dim), "sampler", (n, gm.dim))
        err = float(np.max(np.abs(x1 - exact)))
        # Near 10 eps·|x1| the rounding of x1 itself dominates the method's error.
        floor = 10.0 * eps * max(1.0, float(np.max(np.abs(exact))))
        rows.append((s, err, err > floor))
    used = [(s, e) for s, e, ok in rows if ok and e > 0]
    table = ", ".join(f"steps={s}: {e:.3g}" for s, e, _ in rows)
    if len(used) < 2:
        raise ValueError(
            f"order: the global error is at the rounding floor for all but {len(used)} of "
            f"order_steps={tuple(order_steps)} ({table}); use fewer steps or float64"
        )
    ls, le = np.log([s for s, _ in used]), np.log([e for _, e in used])
    slope = -float(np.polyfit(ls, le, 1)[0])
    if slope < expected_order - 0.4:
        raise AssertionError(
            f"assert_sampler_close[order]: the observed order of the global error is "
            f"{slope:.2f}, expected {expected_order:g} ({reference!r}); max |x1 − exact flow| "
            f"against the closed-form flow of N(μ, Σ): {table}"
        )


def assert_sampler_close(
    sampler: Callable[[Any, Any, int], Any],
    *,
    reference: str = "euler",
    steps: int = 8,
    marginal: MarginalPath | None = None,
    n: int = 32,
    rng: Any = 0,
    like: Any = None,
    to_impl: Converter | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    order: float | bool | None = None,
    order_steps: Sequence[int] = ORDER_STEPS,
) -> None:
    """Assert a user's ODE sampler makes the reference method's field calls and lands on its x1.

    ``sampler(field, x0, steps)`` must integrate dx/dt = field(x, t) from t = 0 to t = 1 in
    ``steps`` uniform steps and return x1 (n, d); ``field(x, t)`` takes x (n, d) and t (n,)
    in x's namespace and dtype. The sampler gets fmref's exact vector field of ``marginal``
    (default :func:`sampler_test_marginal`: unequal weights, full covariances) and x0 = n
    exact samples of p_0 in the user's library (``like=`` an example array or ``to_impl=``).

    It fails, naming the call, step, stage and time, when

    - the calls differ from those of ``fmref.samplers.METHODS[reference]`` on the uniform grid
      (stage j of step i at t_i + c_j h): a grid that does not reach t = 1, a stage at the
      wrong time, a missing or extra stage;
    - the sampler calls the field with x of another dtype than x0, or returns x1 of another
      dtype (a lower precision than asked);
    - x1 differs from ``fmref.samplers.integrate(field, x0, method=reference, steps=steps)``
      in float64 from the same x0 beyond rtol/atol (default: the table of ``fmref.testing``
      for x0's dtype, ×10 for the rounding accumulated over the steps);
    - with ``order`` (a number, or True for the reference's classical order), the order of the
      global error fitted over ``order_steps`` against the closed-form flow of Gaussian data
      (the marginal's data if it is one Gaussian, else a fixed N(μ, Σ) with full Σ) is below
      ``order`` − 0.4.

    ``reference`` is one of the fixed-step methods: "euler", "heun", "midpoint", "rk4".
    """
    check_callable(sampler, "sampler", "sampler(field, x0, steps) -> x1")
    fixed = [k for k, m in METHODS.items() if not m.adaptive]
    if reference not in fixed:
        if not isinstance(reference, str):
            raise TypeError(f"reference must be a str, got {type(reference).__name__}")
        raise ValueError(f"reference must be one of {fixed} (fixed-step), got {reference!r}")
    steps = check_int(steps, "steps", low=1)
    n = check_int(n, "n", low=1)
    if marginal is None:
        marginal = sampler_test_marginal()
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be an fmref MarginalPath, got {type(marginal).__name__}")
    expected_order: float | None = None
    if order is True:
        expected_order = float(METHODS[reference].order)
    elif order is not None and order is not False:
        expected_order = check_float(order, "order", low=0.0, low_open=True)
    if isinstance(order_steps, (str, bytes)) or len(order_steps) < 2:
        raise ValueError(f"order_steps must be at least two step counts, got {order_steps!r}")
    order_steps = [check_int(s, "order_steps[i]", low=1) for s in order_steps]
    g = rng_from(rng)
    conv = converter(like, to_impl)
    d = marginal.dim
    x0u, x0s = user_inputs(conv, marginal.sample(n, 0.0, rng=g))
    rec = _Recorder(marginal, n, x0u.dtype)
    out = _run(sampler, rec, x0u, steps, n, d)

    want = _expected_calls(reference, steps)
    report = _call_report(rec.times, want, reference, steps, _time_tolerance(x0u.dtype, steps))
    if report is not None:
        raise AssertionError(f"assert_sampler_close[calls]: {report}")
    if rec.problems:
        more = f" (and {len(rec.problems) - 1} more calls)" if len(rec.problems) > 1 else ""
        raise AssertionError(f"assert_sampler_close[calls]: {rec.problems[0]}{more}")
    if getattr(out, "dtype", None) != x0u.dtype:
        raise AssertionError(
            f"assert_sampler_close[x1]: the sampler returned x1 of dtype "
            f"{getattr(out, 'dtype', None)} for x0 of dtype {x0u.dtype} (lower or other "
            "precision than asked)"
        )
    actual = back(out, "sampler", (n, d))
    expected = np.asarray(
        integrate(marginal.vector_field, x0s, method=reference, steps=steps).x, dtype=np.float64
    )
    rt, at = default_tolerance(x0u.dtype, rtol, atol, scale=10.0)
    check(
        f"assert_sampler_close[x1, reference={reference!r}, steps={steps}]",
        actual,
        expected,
        rt,
        at,
        1.0,
        lambda i: f"x0 = {fmt(x0s[i])} (row {i} of x0)",
    )
    if expected_order is not None:
        _observed_order(sampler, reference, marginal, expected_order, order_steps, n, g, conv)
