"""ODE machinery shared by the samplers and the likelihood: time grids, checked field calls,
fixed-step Runge–Kutta steps and the adaptive ``solve_ivp`` reference.

A *field* is any callable ``u(x, t)`` with x of shape (n, d) and t an (n,) array of the same
namespace and dtype, returning (n, d). Every call is checked: a wrong shape or a non-finite
value stops the solve with the step index and the time where it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._check import check_float, check_int
from ._xp import Array, Namespace, device, from_numpy, namespace, to_numpy

Field = Callable[[Array, Array], Array]

#: Fixed-step methods and their classical orders (global error O(h^order)).
FIXED_ORDERS = {"euler": 1, "heun": 2, "midpoint": 2, "rk4": 4}
#: Adaptive methods, mapped to ``scipy.integrate.solve_ivp`` names.
ADAPTIVE = {"rk45": "RK45", "dop853": "DOP853"}
METHODS = (*FIXED_ORDERS, *ADAPTIVE)


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


class CheckedField:
    """Call ``field(x, t)`` at a scalar time, counting calls and checking every output."""

    def __init__(
        self,
        field: Any,
        xp: Namespace,
        shape: tuple[int, int],
        dtype: Any,
        dev: Any,
        name: str = "field",
    ) -> None:
        if not callable(field):
            raise TypeError(f"{name} must be callable as {name}(x, t), got {type(field).__name__}")
        self.field, self.xp, self.shape, self.dtype, self.dev = field, xp, shape, dtype, dev
        self.name = name
        self.nfe = 0

    def __call__(self, x: Array, t: float, where: str) -> Array:
        xp = self.xp
        tt = xp.full((self.shape[0],), t, dtype=self.dtype, device=self.dev)
        u = self.field(x, tt)
        self.nfe += 1
        shape = tuple(getattr(u, "shape", ()))
        if shape != self.shape:
            raise ValueError(
                f"{self.name} returned shape {shape} at {where} (t = {t!r}); "
                f"expected {self.shape}, the shape of x"
            )
        if namespace(u) is not xp or u.dtype != self.dtype:
            raise TypeError(
                f"{self.name} returned a {type(u).__name__} of dtype {u.dtype} at {where} "
                f"(t = {t!r}); expected an array of x's namespace with dtype {self.dtype}"
            )
        if not bool(xp.all(xp.isfinite(u))):
            raise ValueError(f"{self.name} returned non-finite values at {where} (t = {t!r})")
        return u


def fixed_step(method: str, f: CheckedField, x: Array, t: float, t_next: float, i: int) -> Array:
    """Advance x from t to t_next by one step of ``method`` (Euler is Algorithm 1)."""
    h = t_next - t
    w = f"step {i}"
    if method == "euler":
        return x + h * f(x, t, w)
    if method == "heun":
        k1 = f(x, t, w)
        k2 = f(x + h * k1, t_next, w)
        return x + (0.5 * h) * (k1 + k2)
    if method == "midpoint":
        k1 = f(x, t, w)
        return x + h * f(x + (0.5 * h) * k1, t + 0.5 * h, w)
    if method == "rk4":
        k1 = f(x, t, w)
        k2 = f(x + (0.5 * h) * k1, t + 0.5 * h, w)
        k3 = f(x + (0.5 * h) * k2, t + 0.5 * h, w)
        k4 = f(x + h * k3, t_next, w)
        return x + (h / 6.0) * (k1 + 2.0 * (k2 + k3) + k4)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def adaptive(
    method: str,
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

    xp, (n, d) = f.xp, f.shape
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
        method=ADAPTIVE[method],
        rtol=rtol,
        atol=atol,
        t_eval=grid if at_grid else None,
    )
    if sol.status != 0:
        raise RuntimeError(f"solve_ivp ({ADAPTIVE[method]}) failed: {sol.message}")
    states = np.ascontiguousarray(sol.y.T).reshape(-1, n, d)
    return np.asarray(sol.t, dtype=np.float64), states
