"""The Gaussian conditional probability path p_t(x|z) = N(α_t z, β_t² I).

:meth:`GaussianPath.draw` is the one place x_t = α_t z + β_t ε and the CFM regression target
α̇_t z + β̇_t ε are formed; training, the losses, the oracle and the golden vectors all take them
from its :class:`PathSample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, final

from ._xp import LOG_2PI, Array, Namespace, device, float_array, from_numpy, namespace, times
from .mixtures import rng_from
from .schedules import Schedule, ScheduleValues

__all__ = ["GaussianPath", "PathSample"]


@final
@dataclass(frozen=True)
class PathSample:
    """One point of the conditional path per row: x_t = α_t z + β_t ε, with its CFM target.

    Attributes
    ----------
    t : (n,) time of each row.
    z : (n, d) data points z ~ p_data.
    eps : (n, d) noise ε ~ N(0, I) (flow_matching's x_0; z is its x_1).
    x : (n, d) x_t = α_t z + β_t ε = ψ_t(ε|z), a draw of p_t(·|z).
    schedule : α_t, β_t, α̇_t, β̇_t, ββ̇_t per row, each (n,).
    target : (n, d) the CFM regression target α̇_t z + β̇_t ε = d/dt ψ_t(ε|z) (z − ε for
        Linear), computed on first access; a ValueError there if α̇_t or β̇_t is infinite
        at some row (β̇ at t = 1 for LinearVP, SqrtBeta and VP; t = 0 for Polynomial(p < 1)).

    Every array has the namespace, device and dtype of ``z``.
    """

    t: Array
    z: Array
    eps: Array
    x: Array
    schedule: ScheduleValues

    @cached_property
    def target(self) -> Array:
        """α̇_t z + β̇_t ε, the velocity of the conditional flow at x_t (Algorithm 3)."""
        xp = namespace(self.z)
        s = _columns(self.schedule, xp)
        _need_finite_rates(s, xp)
        return s.alpha_dot * self.z + s.beta_dot * self.eps


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

    def _prep(self, t: Any, **arrays: Any) -> tuple[list[Array], Array, ScheduleValues, Namespace]:
        """Validate same-shape (n, d) arrays and t; return them, t as (n,) and α, β, … at t."""
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
        return out, tt, self.schedule(tt), xp

    def draw(self, z: Any, t: Any, *, eps: Any = None, rng: Any = None) -> PathSample:
        """Put each row of ``z`` on the conditional path at its time: x_t = α_t z + β_t ε.

        Parameters
        ----------
        z : (n, d) data points, any array-API namespace, float32 or float64.
        t : a float or an (n,) array in [0, 1].
        eps : (n, d) noise ε ~ N(0, I) of z's namespace and dtype; or
        rng : a numpy Generator or an int seed to draw ε from (standard normal, float64, then
            moved to z's namespace, device and dtype). Give exactly one of ``eps`` and ``rng``.

        Returns
        -------
        PathSample with t, z, ε, x_t, the schedule values and the CFM target α̇_t z + β̇_t ε.
        """
        if (eps is None) == (rng is None):
            raise ValueError("give exactly one of eps (the noise) and rng (to draw it)")
        if eps is None:
            g = rng_from(rng)
            zz, xp = float_array(z, "z", ndim=2)
            eps = from_numpy(g.standard_normal(tuple(zz.shape)), xp, device(zz), zz.dtype)
        return self._draw(t, z=z, eps=eps)

    def _draw(self, t: Any, **arrays: Any) -> PathSample:
        # The noise is called x0 by flow() and eps elsewhere; the names only serve messages.
        got, tt, sv, xp = self._prep(t, **arrays)
        named = dict(zip(arrays, got, strict=True))
        z, eps = named["z"], named["eps" if "eps" in named else "x0"]
        s = _columns(sv, xp)
        return PathSample(tt, z, eps, s.alpha * z + s.beta * eps, sv)

    def sample(self, z: Array, t: Any, eps: Array) -> Array:
        """Draw x ~ p_t(·|z) as x = α_t z + β_t ε, given ε ~ N(0, I): ``draw(z, t, eps=eps).x``."""
        return self._draw(t, z=z, eps=eps).x

    def flow(self, x0: Array, z: Array, t: Any) -> Array:
        """Conditional flow ψ_t(x0|z) = α_t z + β_t x0 (x0 a point of p_init)."""
        return self._draw(t, x0=x0, z=z).x

    def target(self, z: Array, eps: Array, t: Any) -> Array:
        """CFM regression target α̇_t z + β̇_t ε: ``draw(z, t, eps=eps).target`` (0.1's order)."""
        return self._draw(t, z=z, eps=eps).target

    def conditional_vector_field(self, x: Array, z: Array, t: Any) -> Array:
        """u_t(x|z) = α̇_t z + (β̇_t/β_t)(x − α_t z); needs β_t > 0 (t < 1)."""
        (x, z), _, sv, xp = self._prep(t, x=x, z=z)
        s = _columns(sv, xp)
        _need_beta(s, xp)
        _need_finite_rates(s, xp)
        return s.alpha_dot * z + (s.beta_dot / s.beta) * (x - s.alpha * z)

    def conditional_score(self, x: Array, z: Array, t: Any) -> Array:
        """∇_x log p_t(x|z) = −(x − α_t z)/β_t²; needs β_t > 0."""
        (x, z), _, sv, xp = self._prep(t, x=x, z=z)
        s = _columns(sv, xp)
        _need_beta(s, xp)
        return -(x - s.alpha * z) / (s.beta * s.beta)

    def conditional_log_prob(self, x: Array, z: Array, t: Any) -> Array:
        """log N(x; α_t z, β_t² I), shape (n,); needs β_t > 0."""
        (x, z), _, sv, xp = self._prep(t, x=x, z=z)
        s = _columns(sv, xp)
        _need_beta(s, xp)
        d = x.shape[1]
        r = (x - s.alpha * z) / s.beta
        return -0.5 * xp.sum(r * r, axis=1) - d * xp.log(s.beta[:, 0]) - 0.5 * d * LOG_2PI


def _columns(sv: ScheduleValues, xp: Namespace) -> ScheduleValues:
    """The per-row values as (n, 1) columns, to scale rows of (n, d) arrays."""
    return ScheduleValues(*(xp.reshape(v, (-1, 1)) for v in vars(sv).values()))


def _need_finite_rates(s: ScheduleValues, xp: Namespace) -> None:
    ok = xp.all(xp.isfinite(s.alpha_dot)) & xp.all(xp.isfinite(s.beta_dot))
    if not bool(ok):
        raise ValueError(
            "t: α̇_t or β̇_t is infinite there (β̇ at t = 1 for LinearVP, SqrtBeta and VP; "
            "α̇ and β̇ at t = 0 for Polynomial(p < 1)); use a t inside (0, 1)"
        )


def _need_beta(s: ScheduleValues, xp: Namespace) -> None:
    if not bool(xp.all(s.beta > 0)):
        raise ValueError("t: β_t = 0 there (t = 1), where p_t(x|z) is a point mass; use t < 1")
