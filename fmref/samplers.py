"""ODE samplers: simulate dX_t = u_t(X_t) dt from p_init (or exact p_{t0}) to t1.

Fixed-step methods on a uniform or given grid (Euler exactly as the lecture's Algorithm 1,
Heun, midpoint, classical RK4) and an adaptive reference through
``scipy.integrate.solve_ivp`` (RK45, DOP853) with rtol/atol. Any vector field callable
``u(x, t)`` works: the exact marginal field, an MLP, a user's function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

import numpy as np

from . import _ode
from ._check import MISSING, check_int, positional_rng
from ._xp import Array, device, float_array, from_numpy
from .marginals import MarginalPath
from .mixtures import _like

__all__ = ["METHODS", "ORDERS", "Method", "SampleResult", "integrate", "sample"]

Method = _ode.Method
#: The methods, name → :class:`Method` (step function, order, stage nodes).
METHODS = _ode.METHODS
#: Classical order of each method's global error, read off :data:`METHODS`.
ORDERS = {name: m.order for name, m in METHODS.items()}


@final
@dataclass(frozen=True)
class SampleResult:
    """Outcome of an ODE or SDE simulation.

    Attributes
    ----------
    x : (n, d) final points, in the namespace and dtype of the start points.
    trajectory : (T, n, d) states at ``times`` (T = steps + 1 on a fixed grid), or None.
    times : (T,) float64 NumPy array: the grid used, or the adaptive solver's accepted times.
    nfe : number of calls to the field (one call evaluates all n points).
    method : the method's name.
    """

    x: Array
    trajectory: Array | None
    times: np.ndarray
    nfe: int
    method: str


def integrate(
    field: Any,
    x0: Any,
    *,
    method: str = "rk4",
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    grid: Any = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    return_trajectory: bool = False,
) -> SampleResult:
    """Integrate dx/dt = field(x, t) from x0 at the first time to the last.

    Fixed-step updates with h = t_{i+1} − t_i and k1 = u(x_i, t_i) (each method's order and
    stage nodes are in :data:`METHODS`):

    - ``euler`` (Algorithm 1): x_{i+1} = x_i + h k1
    - ``heun``: k2 = u(x_i + h k1, t_{i+1}); x_{i+1} = x_i + h (k1 + k2)/2
    - ``midpoint``: x_{i+1} = x_i + h u(x_i + h k1/2, t_i + h/2)
    - ``rk4``: the classical four-stage Runge–Kutta method
    - ``rk45``, ``dop853``: ``scipy.integrate.solve_ivp`` on the flattened float64 state with
      ``rtol``/``atol``; ``times`` are its accepted steps, or ``grid`` when one is given.

    Parameters
    ----------
    field : callable ``u(x, t)``, x (n, d), t (n,) in x's namespace and dtype → (n, d).
    x0 : (n, d) start points (any array-API namespace, float32 or float64).
    steps, t0, t1 : a uniform grid of ``steps`` steps from t0 to t1 (t0 > t1 integrates
        backwards); ignored when ``grid`` is given.
    grid : explicit strictly monotone times in [0, 1] (decreasing integrates backwards).
    return_trajectory : keep the state at every time of the grid.

    Returns
    -------
    SampleResult with ``x`` in x0's namespace, device and dtype.
    """
    x0, xp = float_array(x0, "x0", ndim=2)
    m = _ode.method(method)
    g = _ode.time_grid(steps, t0, t1, grid)
    dev = device(x0)
    f = _ode.CheckedField(field, x0)
    if m.step is None:
        rtol, atol = _ode.check_tolerances(rtol, atol)
        ts, states = _ode.adaptive(m, f, x0, g, rtol=rtol, atol=atol, at_grid=grid is not None)
        x = from_numpy(states[-1], xp, dev, x0.dtype)
        traj = from_numpy(states, xp, dev, x0.dtype) if return_trajectory else None
        return SampleResult(x, traj, ts, f.nfe, method)
    x = x0
    kept = [x0] if return_trajectory else []
    for i in range(g.shape[0] - 1):
        x = m.step(f, x, float(g[i]), float(g[i + 1]), f"step {i}")
        if return_trajectory:
            kept.append(x)
    traj = xp.stack(kept, axis=0) if return_trajectory else None
    return SampleResult(x, traj, g, f.nfe, method)


def sample(
    field: Any,
    n: int,
    *args: Any,
    rng: Any = MISSING,
    marginal: MarginalPath | None = None,
    like: Any = None,
    dim: int | None = None,
    **integrate_kwargs: Any,
) -> SampleResult:
    """Draw n start points and push them through the ODE with :func:`integrate`.

    Start points are exact samples of p_{t0} from ``marginal`` when given (needed for VP,
    whose α_0 ≠ 0), else p_init = N(0, I_d), which is p_0 only, so then the start time must
    be 0. ``dim`` defaults to ``marginal.dim`` or a ``dim`` attribute of the field (or of the
    object a bound-method field belongs to). ``rng`` is keyword-only (positional is
    deprecated): a Generator or an int seed. Draws are float64 NumPy, or the namespace, device
    and dtype of ``like``.
    """
    n = check_int(n, "n", low=1)
    g = positional_rng(args, rng, "samplers.sample")
    grid = integrate_kwargs.get("grid")
    start = (
        float(_ode.time_grid(1, 0.0, 1.0, grid)[0])
        if grid is not None
        else integrate_kwargs.get("t0", 0.0)
    )
    if marginal is not None:
        if not isinstance(marginal, MarginalPath):
            raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
        x0 = marginal.sample(int(n), start, rng=g, like=like)
    else:
        if start != 0.0:
            raise ValueError(
                f"start time {start!r}: p_init = N(0, I) is p_0 only; pass marginal= to start "
                "from exact samples of p_t0"
            )
        d = dim if dim is not None else _infer_dim(field)
        if d is None:
            raise TypeError("dim is required: the field has no dim attribute to infer it from")
        x0 = g.standard_normal((n, check_int(d, "dim", low=1)))
        if like is not None:
            x0 = _like(x0, like)
    return integrate(field, x0, **integrate_kwargs)


def _infer_dim(field: Any) -> Any:
    for owner in (field, _ode.bound_owner(field)):
        d = getattr(owner, "dim", None)
        if d is not None:
            return d
    return None
