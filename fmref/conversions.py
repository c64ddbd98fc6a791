"""Exact conversions between velocity u, data prediction x̂, noise prediction ε̂ and score s.

For x = α_t z + β_t ε the posterior means satisfy x = α x̂ + β ε̂, so with α, β > 0 (0 < t < 1):

- ε̂ = (x − α x̂)/β,   x̂ = (x − β ε̂)/α
- s = −ε̂/β,          ε̂ = −β s
- u = α̇ x̂ + β̇ ε̂,     x̂ = (β u − β̇ x)/(α̇ β − α β̇)
- u = (α̇/α) x + (α̇ β²/α − β β̇) s,   s = (α u − α̇ x)/(α̇ β² − α β β̇)

Each function takes the schedule, x (n, d), t (float or (n,)) and the known prediction (n, d).
"""

from __future__ import annotations

from typing import Any

from ._xp import Array, device, float_array, times
from .schedules import Schedule, ScheduleValues

__all__ = [
    "eps_hat_from_score",
    "eps_hat_from_x_hat",
    "score_from_eps_hat",
    "score_from_velocity",
    "velocity_from_score",
    "velocity_from_x_hat",
    "x_hat_from_eps_hat",
    "x_hat_from_velocity",
]


def _sv(
    schedule: Schedule, x: Any, t: Any, value: Any, name: str
) -> tuple[ScheduleValues, Array, Array]:
    """Validate x and the known prediction ``value``; return the schedule columns, x, value."""
    x, xp = float_array(x, "x", ndim=2)
    value, vxp = float_array(value, name, ndim=2)
    if vxp is not xp:
        raise TypeError(f"{name} must be an array of x's namespace, got {type(value).__name__}")
    if value.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got {value.shape}")
    if value.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {value.dtype}, expected {x.dtype} like x")
    tt = times(t, x.shape[0], xp, x.dtype, device(x))
    s = schedule(tt)
    if not bool(xp.all((s.alpha > 0) & (s.beta > 0))):
        raise ValueError("t: conversions need α_t > 0 and β_t > 0 (0 < t < 1)")
    cols = ScheduleValues(*(xp.reshape(v, (-1, 1)) for v in vars(s).values()))
    return cols, x, value


def eps_hat_from_x_hat(schedule: Schedule, x: Any, t: Any, x_hat: Any) -> Array:
    """ε̂ = (x − α x̂)/β."""
    s, x, x_hat = _sv(schedule, x, t, x_hat, "x_hat")
    return (x - s.alpha * x_hat) / s.beta


def x_hat_from_eps_hat(schedule: Schedule, x: Any, t: Any, eps_hat: Any) -> Array:
    """x̂ = (x − β ε̂)/α."""
    s, x, eps_hat = _sv(schedule, x, t, eps_hat, "eps_hat")
    return (x - s.beta * eps_hat) / s.alpha


def score_from_eps_hat(schedule: Schedule, x: Any, t: Any, eps_hat: Any) -> Array:
    """s = −ε̂/β."""
    s, _, eps_hat = _sv(schedule, x, t, eps_hat, "eps_hat")
    return -eps_hat / s.beta


def eps_hat_from_score(schedule: Schedule, x: Any, t: Any, score: Any) -> Array:
    """ε̂ = −β s."""
    s, _, score = _sv(schedule, x, t, score, "score")
    return -s.beta * score


def velocity_from_x_hat(schedule: Schedule, x: Any, t: Any, x_hat: Any) -> Array:
    """u = α̇ x̂ + β̇ ε̂ with ε̂ = (x − α x̂)/β."""
    s, x, x_hat = _sv(schedule, x, t, x_hat, "x_hat")
    return s.alpha_dot * x_hat + s.beta_dot * (x - s.alpha * x_hat) / s.beta


def x_hat_from_velocity(schedule: Schedule, x: Any, t: Any, velocity: Any) -> Array:
    """x̂ = (β u − β̇ x)/(α̇ β − α β̇)."""
    s, x, velocity = _sv(schedule, x, t, velocity, "velocity")
    return (s.beta * velocity - s.beta_dot * x) / (s.alpha_dot * s.beta - s.alpha * s.beta_dot)


def velocity_from_score(schedule: Schedule, x: Any, t: Any, score: Any) -> Array:
    """u = (α̇/α) x + (α̇ β²/α − β β̇) s."""
    s, x, score = _sv(schedule, x, t, score, "score")
    return (s.alpha_dot / s.alpha) * x + (
        s.alpha_dot * s.beta * s.beta / s.alpha - s.beta_beta_dot
    ) * score


def score_from_velocity(schedule: Schedule, x: Any, t: Any, velocity: Any) -> Array:
    """s = (α u − α̇ x)/(α̇ β² − α β β̇)."""
    s, x, velocity = _sv(schedule, x, t, velocity, "velocity")
    return (s.alpha * velocity - s.alpha_dot * x) / (
        s.alpha_dot * s.beta * s.beta - s.alpha * s.beta_beta_dot
    )
