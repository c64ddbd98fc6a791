"""ODE machinery shared by the samplers, the SDE and the likelihood: time grids, the one
checked field wrapper, the table of methods (step, order, stage nodes) and the adaptive
``solve_ivp`` reference.

A *field* is any callable ``u(x, t)`` with x of shape (n, d) and t an (n,) array of the same
namespace and dtype, returning (n, d). Every call is checked: a wrong shape or a non-finite
value stops the solve with the step index and the time where it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, final

import numpy as np

from ._check import check_callable, check_choice, check_float, check_int
from ._xp import Array, device, from_numpy, namespace, to_numpy

Field = Callable[[Array, Array], Array]


def time_grid(steps: Any, t0: Any, t1: Any, grid: Any) -> np.ndarray:
    """Return the float64 time grid: ``grid`` if given, else ``steps`` uniform steps t0 → t1.

    ``grid`` must be 1-D, have at least two times in [0, 1] and be strictly monotone
    (increasing for forward, decreasing for backward integration).
    """
    if grid is not None:
        g = np.asarray(to_numpy(grid), dtype=np.float64)
        if g.ndim != 1 or g.shape[0] < 2:
            raise ValueError(f"grid must be a 1-D array of at least 2 times, got shape {g.shape}")
        if not np.all((g >= 0) & (g <= 1)):  # NaN fails too
            raise ValueError("grid: every time must lie in [0, 1] (no NaN)")
        dg = np.diff(g)
        if not (np.all(dg > 0) or np.all(dg < 0)):
            bad = int(np.argmax(dg <= 0) if dg[0] > 0 else np.argmax(dg >= 0))
            raise ValueError(
                "grid must be strictly increasing or strictly decreasing; "
                f"grid[{bad}] = {g[bad]!r}, grid[{bad + 1}] = {g[bad + 1]!r}"
            )
        return g
    steps = check_int(steps, "steps", low=1)
    t0 = check_float(t0, "t0", low=0.0, high=1.0)
    t1 = check_float(t1, "t1", low=0.0, high=1.0)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0!r}")
    return np.linspace(t0, t1, steps + 1)


def check_tolerances(rtol: Any, atol: Any) -> tuple[float, float]:
    """Return (rtol, atol) as floats, each finite and > 0."""
    return (
        check_float(rtol, "rtol", low=0.0, low_open=True),
        check_float(atol, "atol", low=0.0, low_open=True),
    )


def bound_owner(obj: Any) -> Any:
    """Return the object a bound method belongs to (its ``__self__``), else None."""
    return getattr(obj, "__self__", None)


class CheckedField:
    """Call a field ``u(x, t)`` for the samplers, the SDE and the likelihood, checking each call.

    ``t`` may be a float (broadcast to an (n,) array of x's namespace, dtype and device) or
    already such an array. Every output must have shape (n, width) (width defaults to d), the
    namespace and dtype of x, and finite values; otherwise the error names the field, where
    the call happened and the time. ``nfe`` counts the calls.
    """

    def __init__(self, field: Any, like: Array, *, name: str = "field", width: int | None = None):
        check_callable(field, name, f"{name}(x, t)")
        self.field, self.name = field, name
        self.xp, self.dtype, self.dev = namespace(like), like.dtype, device(like)
        self.width = like.shape[1] if width is None else width
        self.nfe = 0

    def __call__(self, x: Array, t: Any, where: str = "a call") -> Array:
        xp = self.xp
        if isinstance(t, (int, float)):
            tt, t_show = xp.full((x.shape[0],), t, dtype=self.dtype, device=self.dev), t
        else:
            tt, t_show = t, float(t[0])
        u = self.field(x, tt)
        self.nfe += 1
        shape, want = tuple(getattr(u, "shape", ())), (x.shape[0], self.width)
        if shape != want:
            raise ValueError(
                f"{self.name} returned shape {shape} at {where} (t = {t_show!r}); expected {want}"
            )
        if namespace(u) is not xp or u.dtype != self.dtype:
            raise TypeError(
                f"{self.name} returned a {type(u).__name__} of dtype {u.dtype} at {where} "
                f"(t = {t_show!r}); expected an array of x's namespace with dtype {self.dtype}"
            )
        if not bool(xp.all(xp.isfinite(u))):
            raise ValueError(f"{self.name} returned non-finite values at {where} (t = {t_show!r})")
        return u


Step = Callable[[CheckedField, Array, float, float, str], Array]


def _euler(f: CheckedField, x: Array, t: float, t_next: float, w: str) -> Array:
    return x + (t_next - t) * f(x, t, w)


def _heun(f: CheckedField, x: Array, t: float, t_next: float, w: str) -> Array:
    h = t_next - t
    k1 = f(x, t, w)
    k2 = f(x + h * k1, t_next, w)
    return x + (0.5 * h) * (k1 + k2)


def _midpoint(f: CheckedField, x: Array, t: float, t_next: float, w: str) -> Array:
    h = t_next - t
    k1 = f(x, t, w)
    return x + h * f(x + (0.5 * h) * k1, t + 0.5 * h, w)


def _rk4(f: CheckedField, x: Array, t: float, t_next: float, w: str) -> Array:
    h = t_next - t
    k1 = f(x, t, w)
    k2 = f(x + (0.5 * h) * k1, t + 0.5 * h, w)
    k3 = f(x + (0.5 * h) * k2, t + 0.5 * h, w)
    k4 = f(x + h * k3, t_next, w)
    return x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)


@final
@dataclass(frozen=True)
class Method:
    """One ODE method of :data:`METHODS`.

    Attributes
    ----------
    name : the ``method=`` string.
    order : classical order of the global error, O(h^order) (adaptive: the propagated order).
    nodes : fixed-step methods: the time of each field call within one step, in call order,
        as an exact fraction c_i of the step (the call is at t_i + c_i h); None for the
        adaptive methods, whose steps and rejected trials the solver chooses.
    step : fixed-step methods: ``step(f, x, t, t_next, where)`` → x at t_next; else None.
    scipy_name : adaptive methods: the ``scipy.integrate.solve_ivp`` method; else None.
    """

    name: str
    order: int
    nodes: tuple[Fraction, ...] | None
    step: Step | None = None
    scipy_name: str | None = None

    @property
    def adaptive(self) -> bool:
        """Whether ``solve_ivp`` chooses the steps."""
        return self.step is None


_HALF = Fraction(1, 2)

#: The ODE methods, by name: fixed-step Euler (Algorithm 1), Heun, midpoint, classical RK4,
#: and the adaptive ``solve_ivp`` references.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("euler", 1, (Fraction(0),), _euler),
        Method("heun", 2, (Fraction(0), Fraction(1)), _heun),
        Method("midpoint", 2, (Fraction(0), _HALF), _midpoint),
        Method("rk4", 4, (Fraction(0), _HALF, _HALF, Fraction(1)), _rk4),
        Method("rk45", 5, None, scipy_name="RK45"),
        Method("dop853", 8, None, scipy_name="DOP853"),
    )
}


def method(name: Any) -> Method:
    """Return the :data:`METHODS` record called ``name``."""
    return METHODS[check_choice(name, "method", METHODS)]


def adaptive(
    m: Method,
    f: CheckedField,
    x0: Array,
    grid: np.ndarray,
    *,
    rtol: float,
    atol: float,
    at_grid: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve with ``solve_ivp`` in float64 NumPy; return (times, states (T, n, d) float64).

    The states are reported at ``grid`` when ``at_grid`` (dense output), else at the accepted
    steps. The field still sees arrays of x0's namespace and dtype.
    """
    from scipy.integrate import solve_ivp

    xp, (n, d) = f.xp, tuple(x0.shape)
    dev = device(x0)
    lo, hi = float(min(grid[0], grid[-1])), float(max(grid[0], grid[-1]))

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        # Stage times can overshoot the end of the span by a rounding error.
        tc = min(max(float(t), lo), hi)
        x = from_numpy(y.reshape(n, d), xp, dev, f.dtype)
        u = f(x, tc, f"evaluation {f.nfe}")
        return np.asarray(to_numpy(u), dtype=np.float64).reshape(-1)

    y0 = np.asarray(to_numpy(x0), dtype=np.float64).reshape(-1)
    sol = solve_ivp(
        rhs,
        (float(grid[0]), float(grid[-1])),
        y0,
        method=m.scipy_name,
        rtol=rtol,
        atol=atol,
        t_eval=grid if at_grid else None,
    )
    if sol.status != 0:
        raise RuntimeError(f"solve_ivp ({m.scipy_name}) failed: {sol.message}")
    states = np.ascontiguousarray(sol.y.T).reshape(-1, n, d)
    return np.asarray(sol.t, dtype=np.float64), states
