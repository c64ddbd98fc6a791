"""The exact marginal path p_t = Σ_k π_k N(α_t μ_k, α_t² Σ_k + β_t² I) and everything it implies.

For Gaussian-mixture p_data and the Gaussian conditional path every object of flow matching is
closed form (DESIGN.md §4): density, score, marginal vector field u_t, its Jacobian and
divergence, ∂_t log p_t, and the posterior over z. All are evaluated in each component's
eigenbasis, chunked over points so temporaries stay within the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, final

import numpy as np

from . import _dask, _gmm
from ._xp import Array, chunks, device, memory_budget, on_cpu, points, times
from .mixtures import GaussianMixture, _like, rng_from
from .paths import GaussianPath
from .schedules import Schedule, ScheduleValues

__all__ = ["QUANTITIES", "MarginalPath"]

#: Names accepted by :meth:`MarginalPath.evaluate`.
QUANTITIES = (
    "log_prob",
    "score",
    "vector_field",
    "divergence",
    "jacobian",
    "dlog_prob_dt",
    "responsibilities",
    "x_hat",
    "eps_hat",
    "posterior_cov_trace",
)
#: Also accepted by :meth:`MarginalPath.evaluate`, valid for t < 1 only.
QUANTITIES_BEFORE_ONE = ("cfm_floor_integrand",)


@final
class MarginalPath:
    """Exact marginal probability path of ``data`` under the conditional ``path``.

    Parameters
    ----------
    data : GaussianMixture, p_data.
    path : GaussianPath or Schedule (wrapped in a GaussianPath).
    memory_budget : bytes of temporaries per evaluation; default ``$FMREF_MEMORY_BUDGET`` or
        256 MiB. Rows are processed in chunks sized from n, k, d and the dtype.

    Every method takes x of shape (n, d) (float32 or float64, any array-API namespace) and t a
    float or an (n,) array in [0, 1], and returns arrays of x's namespace, device and dtype.
    Valid wherever S_k = α_t² Σ_k + β_t² I is invertible: all of [0, 1] for positive-definite
    Σ_k, t < 1 for Dirac (empirical) or degenerate data.
    """

    def __init__(
        self,
        data: GaussianMixture,
        path: GaussianPath | Schedule,
        *,
        memory_budget: int | None = None,
    ) -> None:
        if not isinstance(data, GaussianMixture):
            raise TypeError(f"data must be a GaussianMixture, got {type(data).__name__}")
        if isinstance(path, Schedule):
            path = GaussianPath(path)
        if not isinstance(path, GaussianPath):
            raise TypeError(f"path must be a GaussianPath or Schedule, got {type(path).__name__}")
        self.data = data
        self.path = path
        self.schedule = path.schedule
        self._budget = None if memory_budget is None else _check_budget(memory_budget)
        self._singular = bool((data.eigenvalues == 0).any())

    @property
    def dim(self) -> int:
        return self.data.dim

    def __repr__(self) -> str:
        return f"MarginalPath({self.data!r}, {self.schedule!r})"

    # -- the engine -----------------------------------------------------------------------
    def evaluate(self, x: Any, t: Any, quantities: Iterable[str]) -> dict[str, Array]:
        """Evaluate several quantities in one pass (sharing rotations and responsibilities).

        ``quantities`` is a subset of :data:`QUANTITIES`; returns a dict name → array.
        """
        want = (quantities,) if isinstance(quantities, str) else tuple(quantities)
        known = QUANTITIES + QUANTITIES_BEFORE_ONE
        bad = [q for q in want if q not in known]
        if bad or not want:
            raise ValueError(f"quantities must be a nonempty subset of {known}, got {bad}")
        if _dask.is_dask(x) or _dask.is_dask(t):
            return _dask.evaluate(self, x, t, want)
        x, xp = points(x, self.dim)
        n, d = x.shape
        # One shared t keeps the per-time coefficients at k·d instead of n·k·d; a constant
        # (n,) array, as ODE solvers pass, takes the same route.
        shared = _is_scalar(t)
        tt = times(t, 1 if shared else n, xp, x.dtype, device(x))
        if not shared and n > 1 and bool(xp.all(tt == tt[0])):
            tt, shared = tt[:1], True
        sv = self.schedule(tt)
        self._check_valid(sv, xp, want)
        p = self.data.params(xp, device(x), x.dtype)
        k = self.data.n_components
        per_row = 12 * k * d
        if "jacobian" in want:
            per_row += (4 * k * d * d if self.data.kind == "full" else 2 * k * d) + 3 * d * d
        item = 4 if x.dtype == xp.float32 else 8
        out: dict[str, Array] = {}
        for sl in chunks(n, per_row * item, self._budget, cpu=on_cpu(x)):
            rows = slice(None) if shared else sl
            tm = _gmm.compute(p, x[sl, ...], sv.alpha[rows], sv.beta[rows], xp)
            vals = _quantities(tm, sv, rows, want, xp)
            if sl.start == 0 and sl.stop == n:
                return vals
            # Results go straight into preallocated outputs, so peak memory is the budget plus
            # one copy of the output (concatenating chunk results would hold it twice).
            for q, val in vals.items():
                if q not in out:
                    out[q] = xp.empty((n, *val.shape[1:]), dtype=val.dtype, device=device(x))
                out[q][sl, ...] = val
            del tm, vals
        return out

    def _check_valid(self, sv: ScheduleValues, xp: Any, want: tuple[str, ...]) -> None:
        if self._singular and not bool(xp.all(sv.beta > 0)):
            raise ValueError(
                f"t: p_data has singular covariances ({self.data.kind} data), so p_t is not a "
                "density where β_t = 0 (t = 1); use t < 1"
            )
        if set(QUANTITIES_BEFORE_ONE) & set(want) and not bool(xp.all(sv.beta > 0)):
            raise ValueError(f"t: {', '.join(QUANTITIES_BEFORE_ONE)} needs β_t > 0 (t < 1)")
        needs_dot = {
            "vector_field",
            "divergence",
            "jacobian",
            "dlog_prob_dt",
            *QUANTITIES_BEFORE_ONE,
        }
        if needs_dot & set(want):
            ok = xp.all(xp.isfinite(sv.alpha_dot)) & xp.all(xp.isfinite(sv.beta_beta_dot))
            if not bool(ok):
                raise ValueError(f"t: {self.schedule!r} has an infinite α̇ or ββ̇ at some t")

    def _one(self, x: Any, t: Any, name: str) -> Array:
        return self.evaluate(x, t, (name,))[name]

    # -- public quantities ----------------------------------------------------------------
    def log_prob(self, x: Any, t: Any) -> Array:
        """log p_t(x), shape (n,)."""
        return self._one(x, t, "log_prob")

    def score(self, x: Any, t: Any) -> Array:
        """∇ log p_t(x) = Σ_k γ_k(x) (−S_k⁻¹ (x − α μ_k)), shape (n, d)."""
        return self._one(x, t, "score")

    def vector_field(self, x: Any, t: Any) -> Array:
        """Marginal vector field u_t(x) = Σ_k γ_k (α̇ μ_k + A_k r_k) = α̇ E[z|x] + β̇ E[ε|x]."""
        return self._one(x, t, "vector_field")

    def divergence(self, x: Any, t: Any) -> Array:
        """div u_t(x) = tr ∇u_t(x), shape (n,)."""
        return self._one(x, t, "divergence")

    def jacobian(self, x: Any, t: Any) -> Array:
        """∇u_t(x) with entry [i, j] = ∂u_i/∂x_j, shape (n, d, d)."""
        return self._one(x, t, "jacobian")

    def dlog_prob_dt(self, x: Any, t: Any) -> Array:
        """∂_t log p_t(x) at fixed x, shape (n,)."""
        return self._one(x, t, "dlog_prob_dt")

    def responsibilities(self, x: Any, t: Any) -> Array:
        """γ_k(x) = P(component k | X_t = x), shape (n, k)."""
        return self._one(x, t, "responsibilities")

    def posterior_mean(self, x: Any, t: Any) -> Array:
        """E[z | X_t = x], the data prediction x̂, shape (n, d)."""
        return self._one(x, t, "x_hat")

    def noise_posterior_mean(self, x: Any, t: Any) -> Array:
        """E[ε | X_t = x], the noise prediction ε̂, shape (n, d)."""
        return self._one(x, t, "eps_hat")

    def cfm_floor_integrand(self, x: Any, t: Any) -> Array:
        """ℓ*(t, x) = c_t² tr Cov(z | X_t = x), c_t = α̇_t − β̇_t α_t/β_t, shape (n,); t < 1.

        Its mean over t ~ U[0, 1) and x ~ p_t is the irreducible CFM loss L* (DESIGN.md §5).
        Computed as (α̇β − β̇α)² Σ_k γ_k tr(C_k)/β² + c_t² Σ_k γ_k ||e_k − E[z|x]||², finite
        wherever β_t > 0 even when c_t is large.
        """
        return self._one(x, t, "cfm_floor_integrand")

    def posterior_cov_trace(self, x: Any, t: Any) -> Array:
        """tr Cov(z | X_t = x), shape (n,)."""
        return self._one(x, t, "posterior_cov_trace")

    def sample(self, n: int, t: Any, rng: Any, *, like: Any = None) -> Array:
        """Draw n exact samples of p_t as α_t z + β_t ε, z ~ p_data, ε ~ N(0, I).

        Float64 NumPy, or the namespace and dtype of ``like``; ``t`` a float or (n,) array.
        """
        g = rng_from(rng)
        z = self.data.sample(n, g)
        eps = g.standard_normal(z.shape)
        if like is not None:
            z, eps = _like(z, like), _like(eps, like)
            if isinstance(t, np.ndarray):
                t = _like(t, like)
        return self.path.sample(z, t, eps)


class _Quantities:
    """Evaluate requested quantities on one chunk, computing shared ones (u, s) once."""

    def __init__(self, tm: _gmm.Terms, sv: ScheduleValues, rows: slice, xp: Any) -> None:
        self.tm = tm
        self.ad = xp.reshape(sv.alpha_dot[rows], (-1, 1, 1))
        self.bbd = xp.reshape(sv.beta_beta_dot[rows], (-1, 1, 1))
        self.sv, self.rows = sv, rows
        self.cache: dict[str, Array] = {}

    def get(self, name: str) -> Array:
        if name not in self.cache:
            self.cache[name] = _FORMULAS[name](self)
        return self.cache[name]


def _quantities(
    tm: _gmm.Terms, sv: ScheduleValues, rows: slice, want: tuple[str, ...], xp: Any
) -> dict[str, Array]:
    q = _Quantities(tm, sv, rows, xp)
    return {name: q.get(name) for name in want}


_FORMULAS: dict[str, Callable[[_Quantities], Array]] = {
    "log_prob": lambda q: q.tm.log_prob,
    "responsibilities": lambda q: q.tm.gamma,
    "score": lambda q: _gmm.score(q.tm),
    "vector_field": lambda q: _gmm.vector_field(q.tm, q.ad, q.bbd),
    "divergence": lambda q: _gmm.divergence(
        q.tm, q.ad, q.bbd, q.get("vector_field"), q.get("score")
    ),
    "jacobian": lambda q: _gmm.jacobian(q.tm, q.ad, q.bbd, q.get("vector_field"), q.get("score")),
    "dlog_prob_dt": lambda q: _gmm.dlog_prob_dt(q.tm, q.ad, q.bbd),
    "x_hat": lambda q: _gmm.posterior_mean_z(q.tm),
    "eps_hat": lambda q: _gmm.posterior_mean_eps(q.tm),
    "posterior_cov_trace": lambda q: _gmm.posterior_cov_trace(q.tm, q.get("x_hat")),
    "cfm_floor_integrand": lambda q: _gmm.cfm_floor_integrand(
        q.tm,
        q.get("x_hat"),
        q.sv.alpha_dot[q.rows] * q.sv.beta[q.rows] - q.sv.beta_dot[q.rows] * q.sv.alpha[q.rows],
    ),
}


def _check_budget(b: int) -> int:
    return memory_budget(b)


def _is_scalar(t: Any) -> bool:
    if isinstance(t, (int, float)):
        return True
    return getattr(t, "ndim", None) == 0
