"""SDE sampling by Euler–Maruyama with the exact (or a supplied) score.

dX_t = [u_t(X_t) + σ_t²/2 ∇log p_t(X_t)] dt + σ_t dW_t.

For every σ_t ≥ 0 this SDE has the same marginals p_t as the ODE dX = u_t(X) dt: the added
drift σ²/2 ∇log p_t and the diffusion σ²/2 Δp_t cancel in the Fokker–Planck equation. The
noise is one N(0, h) draw per coordinate and step, √h ξ with ξ ~ N(0, I). (The course lab's
SDE multiplies two normal draws for its noise, whose product is not Gaussian.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _ode
from ._check import MISSING, check_float, check_int, check_rng, positional_rng
from ._xp import device, float_array, from_numpy
from .marginals import MarginalPath
from .samplers import SampleResult

__all__ = ["integrate_sde", "langevin", "predictor_corrector", "sample_sde", "sigma_values"]

Sigma = float | Callable[[float], float]


def sigma_values(sigma: Any, times: np.ndarray) -> np.ndarray:
    """Evaluate σ_t (a float or a callable of a float t) at ``times``; all must be finite ≥ 0."""
    out = np.empty(times.shape[0], dtype=np.float64)
    for i, t in enumerate(times):
        if callable(sigma):
            v = sigma(float(t))
        elif isinstance(sigma, (int, float, np.floating, np.integer)) and not isinstance(
            sigma, bool
        ):
            v = sigma
        else:
            raise TypeError(f"sigma must be a float or a callable sigma(t), got {sigma!r}")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"sigma({float(t)!r}) must be a real number, got {v!r}") from None
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"sigma must be finite and >= 0; sigma({float(t)!r}) = {v!r}")
        out[i] = v
    return out


def integrate_sde(
    field: Any,
    x0: Any,
    *args: Any,
    rng: Any = MISSING,
    sigma: Sigma,
    score: Any = None,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    grid: Any = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Simulate the SDE from x0 at t0 to t1 by Euler–Maruyama.

    X_{i+1} = X_i + h_i [u(X_i, t_i) + σ_i²/2 s(X_i, t_i)] + σ_i √h_i ξ_i,  ξ_i ~ N(0, I),
    with σ_i = σ(t_i) and h_i = t_{i+1} − t_i (left-point evaluations, so t = 1 is never
    evaluated). The score is only called at steps with σ_i > 0; with σ ≡ 0 this is Euler.

    Parameters
    ----------
    field : callable ``u(x, t)`` → (n, d), t an (n,) array in x's namespace.
    x0 : (n, d) start points, exact samples of p_{t0} for the marginals to be p_t.
    rng : numpy.random.Generator or int seed, keyword-only (positional is deprecated); ξ_i is
        drawn in float64 NumPy, one (n, d) draw per step, then moved to x0's namespace and
        dtype.
    sigma : σ_t ≥ 0, a float or a callable of a float t.
    score : callable ``s(x, t)`` → (n, d), e.g. ``MarginalPath.score``; needed when σ ≢ 0.
    steps, t0, t1, grid : the time grid as in :func:`fmref.samplers.integrate`, increasing only.

    Returns
    -------
    SampleResult (method ``"euler_maruyama"``; ``nfe`` counts calls of the field).
    """
    x0, xp = float_array(x0, "x0", ndim=2)
    g = positional_rng(args, rng, "integrate_sde")
    ts = _ode.time_grid(steps, t0, t1, grid)
    if ts[-1] < ts[0]:
        raise ValueError("the SDE runs forward in time: t0 < t1 (an increasing grid) is required")
    sig = sigma_values(sigma, ts[:-1])
    if np.any(sig > 0) and score is None:
        raise ValueError("score is required when sigma is positive somewhere")
    dev, shape = device(x0), tuple(x0.shape)
    f = _ode.CheckedField(field, x0)
    s = None if score is None else _ode.CheckedField(score, x0, name="score")
    x = x0
    kept = [x0] if return_trajectory else []
    for i in range(ts.shape[0] - 1):
        t, h, sg = float(ts[i]), float(ts[i + 1] - ts[i]), float(sig[i])
        drift = f(x, t, f"step {i}")
        if sg > 0 and s is not None:
            drift = drift + (0.5 * sg * sg) * s(x, t, f"step {i}")
            xi = from_numpy(g.standard_normal(shape), xp, dev, x0.dtype)
            x = x + h * drift + (sg * math.sqrt(h)) * xi
        else:
            x = x + h * drift
        if return_trajectory:
            kept.append(x)
    traj = xp.stack(kept, axis=0) if return_trajectory else None
    return SampleResult(x, traj, ts, f.nfe, "euler_maruyama")


def sample_sde(
    marginal: MarginalPath,
    n: int,
    *args: Any,
    rng: Any = MISSING,
    sigma: Sigma,
    field: Any = None,
    score: Any = None,
    like: Any = None,
    **kwargs: Any,
) -> SampleResult:
    """Draw n exact samples of p_{t0} and run :func:`integrate_sde` with the exact field and
    score of ``marginal`` (or the supplied ``field``/``score``)."""
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    n = check_int(n, "n", low=1)
    g = positional_rng(args, rng, "sample_sde")
    ts = _ode.time_grid(
        kwargs.get("steps", 100), kwargs.get("t0", 0.0), kwargs.get("t1", 1.0), kwargs.get("grid")
    )
    x0 = marginal.sample(int(n), float(ts[0]), rng=g, like=like)
    return integrate_sde(
        marginal.vector_field if field is None else field,
        x0,
        rng=g,
        sigma=sigma,
        score=marginal.score if score is None else score,
        **kwargs,
    )


# -- Langevin dynamics and the predictor–corrector sampler ------------------------------------
def _step_size(step: Any, t: float) -> float:
    """Evaluate a Langevin step size (a float or a callable of a float t); it must be > 0."""
    v = step(float(t)) if callable(step) else step
    return check_float(v, f"step (at t = {float(t)!r})", low=0.0, low_open=True)


def _langevin_steps(
    s: _ode.CheckedField, x: Any, t: float, step: float, k: int, g: np.random.Generator, xp: Any
) -> Any:
    """k unadjusted Langevin steps x ← x + ε s_t(x) + √(2ε) ξ at the fixed time t."""
    for j in range(k):
        xi = from_numpy(g.standard_normal(tuple(x.shape)), xp, s.dev, s.dtype)
        x = x + step * s(x, t, f"Langevin step {j}") + math.sqrt(2.0 * step) * xi
    return x


def langevin(
    score: Any,
    x0: Any,
    t: float,
    *,
    step: float,
    steps: int = 100,
    rng: Any,
    return_trajectory: bool = False,
) -> SampleResult:
    """Run unadjusted Langevin dynamics at the fixed time t, targeting p_t.

    X_{j+1} = X_j + ε ∇log p_t(X_j) + √(2ε) ξ_j,  ξ_j ~ N(0, I),

    the Euler–Maruyama discretisation of dX = ∇log p_t(X) ds + √2 dW, whose stationary law is
    p_t. With the exact score and X_0 ~ p_t the chain keeps p_t up to an O(ε) bias of the
    discretisation (no Metropolis correction), which is why ε must be small against the
    smallest variance of p_t.

    Parameters
    ----------
    score : callable ``s(x, t)`` → (n, d), e.g. ``MarginalPath.score``.
    x0 : (n, d) start points.
    t : the time in [0, 1] at which the score is evaluated.
    step : ε > 0.
    steps : number of Langevin steps.
    rng : numpy.random.Generator or int seed; one (n, d) float64 draw per step.

    Returns
    -------
    SampleResult (method ``"langevin"``, ``times`` all equal to t, ``nfe`` the score calls).
    """
    x0, xp = float_array(x0, "x0", ndim=2)
    g = check_rng(rng)
    t = check_float(t, "t", low=0.0, high=1.0)
    eps = _step_size(step, t)
    k = check_int(steps, "steps", low=1)
    s = _ode.CheckedField(score, x0, name="score")
    x, kept = x0, [x0]
    for _ in range(k):
        x = _langevin_steps(s, x, float(t), eps, 1, g, xp)
        if return_trajectory:
            kept.append(x)
    traj = xp.stack(kept, axis=0) if return_trajectory else None
    return SampleResult(x, traj, np.full(k + 1, float(t)), s.nfe, "langevin")


def predictor_corrector(
    field: Any,
    score: Any,
    x0: Any,
    *,
    rng: Any,
    corrector_step: Any,
    corrector_steps: int = 1,
    sigma: Sigma = 0.0,
    steps: int = 100,
    t0: float = 0.0,
    t1: float = 1.0,
    grid: Any = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Sample with a predictor step followed by Langevin corrector steps at each new time.

    Predictor: one Euler–Maruyama step of dX = [u + σ²/2 s] dt + σ dW from t_i to t_{i+1}
    (σ ≡ 0: an Euler step of the ODE, Algorithm 1). Corrector: ``corrector_steps`` Langevin
    steps X ← X + ε s_{t_{i+1}}(X) + √(2ε) ξ with ε = ``corrector_step`` (a float or a
    callable of t), which pull the state back toward p_{t_{i+1}} and so damp the predictor's
    discretisation error. With the exact field and score every stage targets p_t.

    Parameters
    ----------
    field, score : callables ``u(x, t)`` and ``s(x, t)`` → (n, d).
    x0 : (n, d) start points, exact samples of p_{t0}.
    rng : numpy.random.Generator or int seed.
    steps, t0, t1, grid : the increasing time grid as in :func:`integrate_sde`.

    Returns
    -------
    SampleResult (method ``"predictor_corrector"``; ``nfe`` counts field and score calls).
    """
    x0, xp = float_array(x0, "x0", ndim=2)
    g = check_rng(rng)
    ts = _ode.time_grid(steps, t0, t1, grid)
    if ts[-1] < ts[0]:
        raise ValueError("the sampler runs forward in time: t0 < t1 (an increasing grid)")
    sig = sigma_values(sigma, ts[:-1])
    k = check_int(corrector_steps, "corrector_steps", low=0)
    dev, shape = device(x0), tuple(x0.shape)
    f = _ode.CheckedField(field, x0)
    s = _ode.CheckedField(score, x0, name="score")
    x, kept = x0, [x0]
    for i in range(ts.shape[0] - 1):
        t, h, sg = float(ts[i]), float(ts[i + 1] - ts[i]), float(sig[i])
        drift = f(x, t, f"step {i}")
        if sg > 0:
            drift = drift + (0.5 * sg * sg) * s(x, t, f"step {i}")
            xi = from_numpy(g.standard_normal(shape), xp, dev, x0.dtype)
            x = x + h * drift + (sg * math.sqrt(h)) * xi
        else:
            x = x + h * drift
        if k:
            x = _langevin_steps(
                s, x, float(ts[i + 1]), _step_size(corrector_step, ts[i + 1]), k, g, xp
            )
        if return_trajectory:
            kept.append(x)
    traj = xp.stack(kept, axis=0) if return_trajectory else None
    return SampleResult(x, traj, ts, f.nfe + s.nfe, "predictor_corrector")
