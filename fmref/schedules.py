"""Schedules α_t, β_t of the Gaussian conditional path p_t(x|z) = N(α_t z, β_t² I).

Convention: t = 0 is noise (α_0 = 0, β_0 = 1), t = 1 is data (α_1 = 1, β_1 = 0). One call
returns one frozen record with α, β, α̇, β̇ and ββ̇ = ½ d(β²)/dt. The marginal formulas need
only α̇ and ββ̇, which stay finite where β̇ does not (LinearVP, SqrtBeta and VP at t = 1).

The flow_matching library calls β "sigma_t" and α "alpha_t"; its ``CondOTScheduler`` is
:class:`Linear`, ``CosineScheduler`` is :class:`Cosine`, ``VPScheduler`` is :class:`VP`,
``LinearVPScheduler`` is :class:`LinearVP` and ``PolynomialConvexScheduler(n)`` is
:class:`Polynomial`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, final

import numpy as np

from ._check import check_float
from ._xp import Array, Namespace, namespace, take_rows, traced

__all__ = [
    "VP",
    "Cosine",
    "Custom",
    "Linear",
    "LinearVP",
    "Polynomial",
    "Schedule",
    "ScheduleValues",
    "SqrtBeta",
]


@final
@dataclass(frozen=True)
class ScheduleValues:
    """α_t, β_t, their time derivatives and ββ̇ = ½ d(β²)/dt, each shaped like t."""

    alpha: Array
    beta: Array
    alpha_dot: Array
    beta_dot: Array
    beta_beta_dot: Array

    def rows(self, rows: Any, xp: Namespace) -> ScheduleValues:
        """The values at ``rows`` (a slice or an integer index array) of per-row times; values
        of one time shared by every row (shape (1,)) are returned as they are."""
        if self.alpha.shape[0] == 1:
            return self
        return ScheduleValues(*(take_rows(getattr(self, f.name), rows, xp) for f in fields(self)))


def _as_t(t: Any) -> tuple[Array, Namespace]:
    if isinstance(t, bool):
        raise TypeError("t must be a float or a floating array, got bool")
    if isinstance(t, (int, float, list, tuple)):
        t = np.asarray(t, dtype=np.float64)
    if t is None or isinstance(t, str):
        raise TypeError(f"t must be a float or a floating array, got {type(t).__name__}")
    xp = namespace(t)
    if not xp.isdtype(t.dtype, "real floating"):
        raise TypeError(f"t must have a real floating dtype, got {t.dtype}")
    if not traced(t) and not bool(xp.all((t >= 0) & (t <= 1))):
        raise ValueError("t must lie in [0, 1] (no NaN)")
    return t, xp


def _positive(name: str, v: Any) -> float:
    """A schedule parameter: a finite real > 0 (Python or NumPy scalar), returned as a float."""
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if not (ok and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return float(v)


class Schedule(ABC):
    """Abstract schedule: subclasses implement :meth:`_values` on validated t."""

    #: Whether β̇ is infinite at t = 1 (then the CFM target's variance is unbounded there).
    singular_at_one: bool = False

    def __call__(self, t: Any) -> ScheduleValues:
        """Evaluate the schedule at ``t`` (float or floating array in [0, 1])."""
        tt, xp = _as_t(t)
        return self._values(tt, xp)

    @abstractmethod
    def _values(self, t: Array, xp: Namespace) -> ScheduleValues: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@final
class Linear(Schedule):
    """CondOT / straight line: α_t = t, β_t = 1 − t (Algorithm 4's target z − ε)."""

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        one = xp.ones_like(t)
        return ScheduleValues(t, 1 - t, one, -one, t - 1)


@final
class Cosine(Schedule):
    """α_t = sin(πt/2), β_t = cos(πt/2)."""

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        h = math.pi / 2
        # β as sin(h(1 − t)) is exactly 0 at t = 1 (cos(π/2) ≈ 6e-17 is not), so Dirac data
        # at t = 1 is refused instead of giving a Gaussian of variance ~1e-33.
        s, c = xp.sin(h * t), xp.sin(h * (1 - t))
        return ScheduleValues(s, c, h * c, -h * s, -h * s * c)


@final
@dataclass(frozen=True)
class Polynomial(Schedule):
    """α_t = t^p, β_t = 1 − t^p for p > 0 (α̇ is infinite at t = 0 when p < 1)."""

    p: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_float(self.p, "p", low=0.0, low_open=True))

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        if self.p == 1:
            return Linear()._values(t, xp)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = t**self.p
            # β = 1 − t^p = −expm1(p log t), with log t = log1p(t − 1) (t − 1 exact for
            # t ≥ ½): 1 − t^p cancels near t = 1 (relative error ε/(1 − t)) and rounds
            # t = 1 − 2⁻⁵³ to β = 0.
            b = 0 - xp.expm1(self.p * xp.log1p(t - 1))  # 0 − … keeps β(1) = +0
            # α̇(0) = inf for p < 1 is documented, not an accident
            ad = self.p * t ** (self.p - 1)
        return ScheduleValues(a, b, ad, -ad, -b * ad)

    def __repr__(self) -> str:
        return f"Polynomial(p={self.p})"


@final
class LinearVP(Schedule):
    """α_t = t, β_t = √(1 − t²): variance preserving; β̇ = −t/β is infinite at t = 1."""

    singular_at_one = True

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        b = xp.sqrt(1 - t * t)
        with np.errstate(divide="ignore"):
            bd = -t / b
        return ScheduleValues(t, b, xp.ones_like(t), bd, -t)


@final
class SqrtBeta(Schedule):
    """α_t = t, β_t = √(1 − t): the course lab's LinearAlpha/SquareRootBeta; β̇(1) = −∞."""

    singular_at_one = True

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        b = xp.sqrt(1 - t)
        with np.errstate(divide="ignore"):
            bd = -0.5 / b
        return ScheduleValues(t, b, xp.ones_like(t), bd, -0.5 * xp.ones_like(t))


@final
@dataclass(frozen=True)
class VP(Schedule):
    """flow_matching's VPScheduler: α_t = exp(−T_t/2), T_t = ½(1−t)²(B−b) + (1−t)b, β = √(1−α²).

    Only approximately a noise-to-data schedule: α_0 = exp(−(b+B)/4) ≈ 6.6e-3 for the defaults,
    so start samplers from exact samples of p_0 rather than from N(0, I). Near t = 1,
    β² ≈ b(1 − t), so β̇ is infinite at t = 1 (ββ̇ = −αα̇ stays finite).
    """

    b: float = 0.1
    B: float = 20.0
    singular_at_one = True

    def __post_init__(self) -> None:
        b = check_float(self.b, "b", low=0.0, low_open=True)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "B", check_float(self.B, "B", low=b))

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        s = 1 - t
        big_t = 0.5 * s * s * (self.B - self.b) + s * self.b
        a = xp.exp(-0.5 * big_t)
        ad = 0.5 * (s * (self.B - self.b) + self.b) * a
        # 1 − α² by expm1 keeps β accurate near t = 1, where α → 1.
        b = xp.sqrt(-xp.expm1(-big_t))
        bbd = -a * ad
        with np.errstate(divide="ignore"):
            bd = bbd / b
        return ScheduleValues(a, b, ad, bd, bbd)

    def __repr__(self) -> str:
        return f"VP(b={self.b}, B={self.B})"


_Fn = Callable[[Array], Array]


@final
class Custom(Schedule):
    """A user schedule from callables α(t), β(t) and optionally α̇(t), β̇(t).

    Supplied derivatives are checked at construction against central finite differences on a
    grid of 33 interior times (relative error ≤ ``check_rtol``); missing ones are computed by
    central differences with a step h ≈ ε^(1/3) of t's dtype (2⁻¹⁷ in float64, error ≈ 1e-10;
    2⁻⁸ in float32, error ≈ 1e-5; one-sided second-order stencils at the endpoints). Without
    ``beta_dot``, ββ̇ is the difference of ½β² itself, finite where β̇ is not (β = √(1 − t) at
    t = 1). The callables receive and must return real floating arrays of the caller's
    namespace (complex output is a ``TypeError``).
    """

    def __init__(
        self,
        alpha: _Fn,
        beta: _Fn,
        alpha_dot: _Fn | None = None,
        beta_dot: _Fn | None = None,
        *,
        check_rtol: float = 1e-5,
    ) -> None:
        for name, fn in (("alpha", alpha), ("beta", beta)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        for name, dfn in (("alpha_dot", alpha_dot), ("beta_dot", beta_dot)):
            if dfn is not None and not callable(dfn):
                raise TypeError(f"{name} must be callable or None, got {type(dfn).__name__}")
        self.alpha: _Fn = alpha
        self.beta: _Fn = beta
        self.alpha_dot: _Fn | None = alpha_dot
        self.beta_dot: _Fn | None = beta_dot
        grid = np.linspace(0.02, 0.98, 33)
        for name, f, df in (("alpha", alpha, alpha_dot), ("beta", beta, beta_dot)):
            if df is None:
                continue
            fd = self._fd(f, grid, np)
            got = np.asarray(df(grid), dtype=np.float64)
            if got.shape != grid.shape or not np.allclose(got, fd, rtol=check_rtol, atol=1e-7):
                raise ValueError(
                    f"{name}_dot does not match the finite-difference derivative of {name} "
                    f"(rtol={check_rtol}, atol=1e-7)"
                )

    @staticmethod
    def _fd(f: _Fn, t: Array, xp: Namespace, h: float | None = None) -> Array:
        # Central where both neighbours lie in [0, 1]; within h of an end, the second-order
        # one-sided stencil anchored at t itself (the clips only move rows that use another).
        # The default step balances truncation (h² f‴/6) against rounding (ε/h) in t's dtype:
        # h ≈ ε^(1/3), a power of two (2⁻¹⁷ in float64, 2⁻⁸ in float32); 1e-5 in float32
        # left α̇ = 1.0014 for α = t.
        if h is None:
            h = 2.0 ** round(math.log2(xp.finfo(t.dtype).eps) / 3)
        lo, hi = t - h < 0, t + h > 1
        tc, tf, tb = xp.clip(t, h, 1 - h), xp.clip(t, 0, 1 - 2 * h), xp.clip(t, 2 * h, 1)
        central = (f(tc + h) - f(tc - h)) / (2 * h)
        fwd = (-3 * f(tf) + 4 * f(tf + h) - f(tf + 2 * h)) / (2 * h)
        bwd = (3 * f(tb) - 4 * f(tb - h) + f(tb - 2 * h)) / (2 * h)
        return xp.where(lo, fwd, xp.where(hi, bwd, central))

    @staticmethod
    def _checked(name: str, v: Any, t: Array, xp: Namespace, *, finite: bool) -> Array:
        try:
            same = namespace(v) is xp
        except TypeError:
            same = False
        if not same:
            raise TypeError(f"{name} must return an array of t's namespace, got {type(v).__name__}")
        shape = tuple(getattr(v, "shape", (None,)))
        if shape != tuple(t.shape):
            raise ValueError(
                f"{name} must return an array shaped like t {tuple(t.shape)}, got {v!r}"
            )
        if not xp.isdtype(v.dtype, "real floating"):
            raise TypeError(f"{name} must return a real floating array, got dtype {v.dtype}")
        bad = ~xp.isfinite(v) if finite else xp.isnan(v)
        if not traced(bad) and bool(xp.any(bad)):
            what = "non-finite" if finite else "NaN"
            raise ValueError(f"{name} returned {what} values at some t in [0, 1]")
        return v

    def _values(self, t: Array, xp: Namespace) -> ScheduleValues:
        a = self._checked("alpha", self.alpha(t), t, xp, finite=True)
        b = self._checked("beta", self.beta(t), t, xp, finite=True)
        if not traced(b) and bool(xp.any(b < 0)):
            raise ValueError("beta must return β_t >= 0 (the noise scale), got a negative value")
        # Supplied derivatives may be infinite at an endpoint (β̇ of √(1 − t) at t = 1).
        ad = self.alpha_dot(t) if self.alpha_dot else self._fd(self.alpha, t, xp)
        bd = self.beta_dot(t) if self.beta_dot else self._fd(self.beta, t, xp)
        ad = self._checked("alpha_dot", ad, t, xp, finite=False)
        bd = self._checked("beta_dot", bd, t, xp, finite=False)
        half_b2 = lambda s: 0.5 * self.beta(s) ** 2  # noqa: E731
        if self.beta_dot is None:
            # ½ d(β²)/dt differenced directly: β · (differenced β̇) is 0 · O(1) = 0 where β = 0
            # and β̇ is infinite (β = √(1 − t) at t = 1, where ββ̇ = −½).
            bbd = self._fd(half_b2, t, xp)
        else:
            with np.errstate(invalid="ignore"):
                bbd = b * bd
            # β = 0 times an infinite β̇: ββ̇ = ½ d(β²)/dt is finite there, so difference ½β².
            bbd = xp.where(xp.isfinite(bbd), bbd, self._fd(half_b2, t, xp))
        return ScheduleValues(a, b, ad, bd, bbd)

    def __repr__(self) -> str:
        return f"Custom(alpha={self.alpha!r}, beta={self.beta!r})"


#: Named schedules for the CLI and test suites.
SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "linear": Linear,
    "cosine": Cosine,
    "polynomial": Polynomial,
    "linear_vp": LinearVP,
    "vp": VP,
    "sqrt_beta": SqrtBeta,
}
