"""The Gaussian conditional probability path p_t(x|z) = N(α_t z, β_t² I)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from ._xp import LOG_2PI, Array, Namespace, device, float_array, times
from .schedules import Schedule, ScheduleValues

__all__ = ["GaussianPath"]


@final
@dataclass(frozen=True)
class GaussianPath:
    """Conditional path N(α_t z, β_t² I) with conditional flow ψ_t(x0|z) = α_t z + β_t x0.

    Every method takes batch-first arrays (n, d) and ``t`` as a float or an (n,) array.
    """

    schedule: Schedule

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise TypeError(
                f"schedule must be an fmref.schedules.Schedule, got {type(self.schedule).__name__}"
            )

    def _prep(self, t: Any, **arrays: Any) -> tuple[list[Array], ScheduleValues, Namespace]:
        out: list[Array] = []
        for name, a in arrays.items():
            a, axp = float_array(a, name, ndim=2)
            if not out:
                shape, xp, dtype = a.shape, axp, a.dtype
            elif a.shape != shape:
                raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")
            elif a.dtype != dtype:
                raise TypeError(f"{name} has dtype {a.dtype}, expected {dtype} like the others")
            out.append(a)
        tt = times(t, shape[0], xp, dtype, device(out[0]))
        sv = self.schedule(tt)
        col = ScheduleValues(*(xp.reshape(v, (-1, 1)) for v in vars(sv).values()))
        return out, col, xp

    def sample(self, z: Array, t: Any, eps: Array) -> Array:
        """Draw x ~ p_t(·|z) as x = α_t z + β_t ε, given ε ~ N(0, I) of shape (n, d)."""
        (z, eps), s, _ = self._prep(t, z=z, eps=eps)
        return s.alpha * z + s.beta * eps

    def flow(self, x0: Array, z: Array, t: Any) -> Array:
        """Conditional flow ψ_t(x0|z) = α_t z + β_t x0 (x0 a point of p_init)."""
        (x0, z), s, _ = self._prep(t, x0=x0, z=z)
        return s.alpha * z + s.beta * x0

    def target(self, z: Array, eps: Array, t: Any) -> Array:
        """CFM regression target u_t(α_t z + β_t ε | z) = α̇_t z + β̇_t ε (z − ε for Linear)."""
        (z, eps), s, xp = self._prep(t, z=z, eps=eps)
        self._need_finite_rates(s, xp)
        return s.alpha_dot * z + s.beta_dot * eps

    def conditional_vector_field(self, x: Array, z: Array, t: Any) -> Array:
        """u_t(x|z) = α̇_t z + (β̇_t/β_t)(x − α_t z); needs β_t > 0 (t < 1)."""
        (x, z), s, xp = self._prep(t, x=x, z=z)
        self._need_beta(s, xp)
        self._need_finite_rates(s, xp)
        return s.alpha_dot * z + (s.beta_dot / s.beta) * (x - s.alpha * z)

    def conditional_score(self, x: Array, z: Array, t: Any) -> Array:
        """∇_x log p_t(x|z) = −(x − α_t z)/β_t²; needs β_t > 0."""
        (x, z), s, xp = self._prep(t, x=x, z=z)
        self._need_beta(s, xp)
        return -(x - s.alpha * z) / (s.beta * s.beta)

    def conditional_log_prob(self, x: Array, z: Array, t: Any) -> Array:
        """log N(x; α_t z, β_t² I), shape (n,); needs β_t > 0."""
        (x, z), s, xp = self._prep(t, x=x, z=z)
        self._need_beta(s, xp)
        d = x.shape[1]
        r = (x - s.alpha * z) / s.beta
        return -0.5 * xp.sum(r * r, axis=1) - d * xp.log(s.beta[:, 0]) - 0.5 * d * LOG_2PI

    @staticmethod
    def _need_finite_rates(s: ScheduleValues, xp: Namespace) -> None:
        ok = xp.all(xp.isfinite(s.alpha_dot)) & xp.all(xp.isfinite(s.beta_dot))
        if not bool(ok):
            raise ValueError(
                "t: α̇_t or β̇_t is infinite there (β̇ at t = 1 for LinearVP, SqrtBeta and VP; "
                "α̇ and β̇ at t = 0 for Polynomial(p < 1)); use a t inside (0, 1)"
            )

    @staticmethod
    def _need_beta(s: ScheduleValues, xp: Namespace) -> None:
        if not bool(xp.all(s.beta > 0)):
            raise ValueError("t: β_t = 0 there (t = 1), where p_t(x|z) is a point mass; use t < 1")
