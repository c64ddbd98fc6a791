"""Closed-form flow of the marginal ODE for single-Gaussian data N(μ, Σ) (docs/theory.md §11).

p_t = N(α_t μ, S_t) with S_t = α_t² Σ + β_t² I, and the marginal field is affine,
u_t(x) = α̇_t μ + ½ Ṡ_t S_t⁻¹ (x − α_t μ). Because every S_t shares Σ's eigenvectors Q, the
ODE decouples in that basis and its flow is

    X_t = α_t μ + S_t^{1/2} S_{t0}^{-1/2} (X_{t0} − α_{t0} μ),
    S_t^{1/2} S_{t0}^{-1/2} = Q diag(√((α_t² λ + β_t²) / (α_{t0}² λ + β_{t0}²))) Qᵀ.

For t0 = 0 and α_0 = 0, S_0 = I and this is X_t = α_t μ + S_t^{1/2} X_0. It gives the exact
answer against which the samplers' global errors (and convergence orders) are measured.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._xp import Array, device, float_array, from_numpy, times, to_numpy
from .paths import GaussianPath
from .schedules import Schedule

__all__ = ["gaussian_flow"]


def _eig(mean: Any, cov: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    mu = np.asarray(to_numpy(mean), dtype=np.float64)
    if mu.ndim != 1 or mu.shape[0] < 1 or not np.all(np.isfinite(mu)):
        raise ValueError(f"mean must be a finite (d,) array, got shape {mu.shape}")
    d = mu.shape[0]
    c = np.asarray(to_numpy(cov), dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError("cov must be finite")
    q = None
    if c.ndim == 0:
        lam = np.full(d, float(c))
    elif c.shape == (d,):
        lam = c.copy()
    elif c.shape == (d, d):
        scale = max(float(np.abs(c).max()), 1e-300)
        if not np.allclose(c, c.T, rtol=1e-8, atol=1e-8 * scale):
            raise ValueError("cov must be a symmetric (d, d) matrix")
        lam, q = np.linalg.eigh(0.5 * (c + c.T))
        lam = np.where(lam > -1e-10 * scale, np.maximum(lam, 0.0), lam)
    else:
        raise ValueError(f"cov must be a scalar, ({d},) or ({d}, {d}), got shape {c.shape}")
    if np.any(lam < 0):
        raise ValueError("cov must be positive semidefinite")
    return mu, lam, q


def gaussian_flow(
    mean: Any, cov: Any, schedule: Schedule | GaussianPath, x0: Any, t: Any, t0: Any = 0.0
) -> Array:
    """Map points X_{t0} ~ p_{t0} to X_t along the exact marginal ODE for data N(μ, Σ).

    X_t = α_t μ + S_t^{1/2} S_{t0}^{-1/2} (X_{t0} − α_{t0} μ), S_t = α_t² Σ + β_t² I.

    Parameters
    ----------
    mean : (d,) μ.
    cov : Σ as a scalar (isotropic), (d,) diagonal or (d, d) symmetric PSD matrix.
    schedule : the Schedule (or GaussianPath) of the conditional path.
    x0 : (n, d) points at time t0, any array-API namespace.
    t, t0 : floats or (n,) arrays in [0, 1]; t < t0 runs the flow backwards. S_{t0} must be
        invertible (always unless β_{t0} = 0 and Σ is singular).

    Returns
    -------
    (n, d) array X_t in x0's namespace, device and dtype.
    """
    if isinstance(schedule, GaussianPath):
        schedule = schedule.schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    mu, lam, q = _eig(mean, cov)
    x0, xp = float_array(x0, "x0", ndim=2)
    n, d = x0.shape
    if d != mu.shape[0]:
        raise ValueError(f"x0 must have shape (n, {mu.shape[0]}) to match mean, got {x0.shape}")
    dev, dt = device(x0), x0.dtype
    s_t = schedule(times(t, n, xp, dt, dev, name="t"))
    s_0 = schedule(times(t0, n, xp, dt, dev, name="t0"))
    lam_x = from_numpy(lam, xp, dev, dt)[None, :]
    mu_x = from_numpy(mu, xp, dev, dt)[None, :]
    a_t, b_t = s_t.alpha[:, None], s_t.beta[:, None]
    a_0, b_0 = s_0.alpha[:, None], s_0.beta[:, None]
    v_0 = a_0 * a_0 * lam_x + b_0 * b_0
    if not bool(xp.all(v_0 > 0)):
        raise ValueError("t0: S_t0 = α² Σ + β² I is singular there (β_t0 = 0 and Σ singular)")
    gain = xp.sqrt((a_t * a_t * lam_x + b_t * b_t) / v_0)
    r = x0 - a_0 * mu_x
    if q is None:
        moved = gain * r
    else:
        qx = from_numpy(q, xp, dev, dt)
        moved = ((r @ qx) * gain) @ xp.matrix_transpose(qx)
    return a_t * mu_x + moved
