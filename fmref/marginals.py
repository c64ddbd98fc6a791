"""The exact marginal path p_t = Σ_k π_k N(α_t μ_k, α_t² Σ_k + β_t² I) and everything it implies.

For Gaussian-mixture p_data and the Gaussian conditional path every object of flow matching is
closed form (docs/theory.md §3–8): density, score, marginal vector field u_t, its Jacobian and
divergence, ∂_t log p_t, and the posterior over z. All are evaluated in each component's
eigenbasis, chunked over points so temporaries stay within the memory budget.

Labelled data (``GaussianMixture(..., labels=...)``): every quantity also exists given a class
y, through a keyword ``y=`` on :meth:`MarginalPath.evaluate` and each method (a label, or one
label per row, exactly as ``t`` is one time or one per row). Given y, p_t(x | y) =
Σ_{k∈y} (π_k/π_y) N(x; α μ_k, α² Σ_k + β² I) is again a mixture pushed through the same path,
so the kernel reuses one eigenbasis pass and only restricts the responsibilities to the class:
γ_{k|y} ∝ 1[k∈y] π_k N_k. The exact classifier is p_t(y | x) = Σ_{k∈y} γ_k and its gradient
(classifier guidance) ∇ log p_t(y | x) = Σ_{k∈y} γ_{k|y} s_k − Σ_k γ_k s_k = s_t(x|y) − s_t(x).

Why ``y=`` and not a ``given(y)`` path object: (1) a label is an input of the same kind as
t, scalar or per row, and a per-row label array belongs with the x it labels; a path object
holding it would be valid only for batches of that one size and order. (2) One class keeps
one list of quantities and one chunked engine; a second path class would repeat the method
list. (3) The single-class path already exists without new API:
``MarginalPath(data.given(y), path)`` (its quantities equal these, which a test checks).
(4) Guided fields need the conditional and unconditional quantities at the same (x, t); the
same object answers both by switching one keyword.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, final

import numpy as np

from . import _dask, _gmm, _prune
from ._check import MISSING, check_bool, positional_rng
from ._xp import (
    Array,
    chunks,
    device,
    from_numpy,
    immutable,
    index_assignable,
    memory_budget,
    mutable,
    on_cpu,
    points,
    take_rows,
    times,
    to_numpy,
    traced,
)
from .mixtures import GaussianMixture, _like
from .paths import GaussianPath
from .schedules import Schedule, ScheduleValues

__all__ = [
    "QUANTITIES",
    "QUANTITIES_GIVEN_Y",
    "QUANTITY_ALIASES",
    "QUANTITY_INFO",
    "MarginalPath",
    "Quantity",
]


@final
@dataclass(frozen=True)
class Quantity:
    """One exact quantity fmref computes: its name, shape, meaning and where it is defined.

    Attributes
    ----------
    name : the :class:`MarginalPath` method and the key of :meth:`MarginalPath.evaluate`.
    axes : the symbols of its shape: n rows, d dimensions, k mixture components.
    description : what it is, in the lecture's notation.
    needs_rates : whether it needs finite α̇_t and ββ̇_t (refused at a t where the schedule's
        rate is infinite, e.g. t = 0 for Polynomial(p < 1)).
    before_one : whether it is defined only where β_t > 0 (t < 1), whatever the data. Every
        quantity needs t < 1 for Dirac (empirical) or other singular data.
    given_y : whether it exists only for labelled data with a label ``y=`` (the classifier).
    between_components : whether it holds Σ_k γ_k‖e_k − E[z|x]‖², which is of the size of the
        minor components' responsibilities where one component dominates: pruning then keeps
        components down to that part's floor (docs/numerics.md §6).
    """

    name: str
    axes: tuple[str, ...]
    description: str
    needs_rates: bool = False
    before_one: bool = False
    given_y: bool = False
    between_components: bool = False

    @property
    def shape(self) -> str:
        """The shape as text: "(n,)", "(n, d)", "(n, d, d)" or "(n, k)"."""
        return f"({self.axes[0]},)" if len(self.axes) == 1 else f"({', '.join(self.axes)})"

    def dims(self, n: int, d: int, k: int) -> tuple[int, ...]:
        """The shape for n rows of dimension d under a k-component mixture."""
        size = {"n": n, "d": d, "k": k}
        return tuple(size[a] for a in self.axes)


#: Every quantity :meth:`MarginalPath.evaluate` computes, by name: the one list that
#: evaluate, the Dask path, the golden vectors and the assert helpers read.
QUANTITY_INFO: Mapping[str, Quantity] = MappingProxyType(
    {
        q.name: q
        for q in (
            Quantity("log_prob", ("n",), "log p_t(x)"),
            Quantity("score", ("n", "d"), "∇_x log p_t(x)"),
            Quantity(
                "vector_field",
                ("n", "d"),
                "marginal vector field u_t(x) = α̇_t E[z|x] + β̇_t E[ε|x]",
                needs_rates=True,
            ),
            Quantity("divergence", ("n",), "div u_t(x)", needs_rates=True),
            Quantity(
                "jacobian", ("n", "d", "d"), "∇u_t(x), entry [i, j] = ∂u_i/∂x_j", needs_rates=True
            ),
            Quantity("dlog_prob_dt", ("n",), "∂_t log p_t(x) at fixed x", needs_rates=True),
            Quantity("responsibilities", ("n", "k"), "γ_k(x) = P(component k | X_t = x)"),
            Quantity(
                "posterior_mean", ("n", "d"), "posterior mean E[z | X_t = x] (data prediction x̂)"
            ),
            Quantity(
                "noise_posterior_mean",
                ("n", "d"),
                "noise posterior mean E[ε | X_t = x] (noise prediction ε̂)",
            ),
            Quantity("posterior_cov_trace", ("n",), "tr Cov(z | X_t = x)", between_components=True),
            Quantity(
                "cfm_floor_integrand",
                ("n",),
                "c_t² tr Cov(z | X_t = x), c_t = α̇_t − β̇_t α_t/β_t",
                needs_rates=True,
                before_one=True,
                between_components=True,
            ),
            Quantity(
                "classifier_log_prob",
                ("n",),
                "exact classifier log p_t(y | x) = log Σ_{k∈y} γ_k(x) (labelled data, y=)",
                given_y=True,
            ),
            Quantity(
                "classifier_score",
                ("n", "d"),
                "classifier-guidance direction ∇_x log p_t(y | x) (labelled data, y=)",
                given_y=True,
            ),
        )
    }
)
#: Names of the quantities defined on all of [0, 1] (for positive-definite data), in the order
#: of :data:`QUANTITY_INFO`; a tuple as in fmref 0.1, so it can be indexed and concatenated.
QUANTITIES: tuple[str, ...] = tuple(
    n for n, q in QUANTITY_INFO.items() if not (q.before_one or q.given_y)
)
#: Names also accepted by :meth:`MarginalPath.evaluate`, valid for t < 1 only.
QUANTITIES_BEFORE_ONE: tuple[str, ...] = tuple(
    n for n, q in QUANTITY_INFO.items() if q.before_one and not q.given_y
)
#: Names accepted by :meth:`MarginalPath.evaluate` only with ``y=`` (labelled data).
QUANTITIES_GIVEN_Y: tuple[str, ...] = tuple(n for n, q in QUANTITY_INFO.items() if q.given_y)
#: fmref 0.1's names, still accepted (with a DeprecationWarning) for one release.
QUANTITY_ALIASES: Mapping[str, str] = MappingProxyType(
    {"x_hat": "posterior_mean", "eps_hat": "noise_posterior_mean"}
)


def canonical_quantities(
    quantities: Iterable[str] | str,
    *,
    known: Iterable[str] = QUANTITY_INFO,
    name: str = "quantities",
    stacklevel: int = 2,
) -> tuple[str, ...]:
    """Map names to those of ``known`` (default :data:`QUANTITY_INFO`), resolving 0.1's aliases.

    An alias (``x_hat``, ``eps_hat``) is a DeprecationWarning pointing ``stacklevel`` frames up
    from the caller; a name that is neither, or an empty selection, is a ValueError naming
    ``name``.
    """
    asked = (quantities,) if isinstance(quantities, str) else tuple(quantities)
    names = tuple(known)
    bad = [q for q in asked if q not in names and QUANTITY_ALIASES.get(q) not in names]
    if bad or not asked:
        raise ValueError(f"{name} must be a nonempty subset of {names}, got {bad}")
    old = [q for q in asked if q not in names]
    if old:
        new = ", ".join(f"{q!r} → {QUANTITY_ALIASES[q]!r}" for q in old)
        warnings.warn(
            f"{name}: fmref 0.1's quantity names are deprecated; use {new}",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
    return tuple(q if q in names else QUANTITY_ALIASES[q] for q in asked)


@final
class MarginalPath:
    """Exact marginal probability path of ``data`` under the conditional ``path``.

    Parameters
    ----------
    data : GaussianMixture, p_data.
    path : GaussianPath or Schedule (wrapped in a GaussianPath).
    memory_budget : bytes of temporaries per evaluation; default ``$FMREF_MEMORY_BUDGET`` or
        256 MiB. Rows are processed in chunks sized from n, k, d and the dtype.
    prune : drop, row by row, the components whose contribution a bound computed beforehand
        proves to be below ε² of every quantity (docs/numerics.md §6); the results differ from
        ``prune=False`` only by rounding. Default True; never under JAX or with ``y=``.

    Every method takes x of shape (n, d) (float32 or float64, any array-API namespace) and t a
    float or an (n,) array in [0, 1], and returns arrays of x's namespace, device and dtype.
    Valid wherever S_k = α_t² Σ_k + β_t² I is invertible: all of [0, 1] for positive-definite
    Σ_k, t < 1 for Dirac (empirical) or degenerate data. For labelled data every method also
    takes ``y=`` (a label or one per row) and then returns the quantity of p_t(· | y).
    """

    def __init__(
        self,
        data: GaussianMixture,
        path: GaussianPath | Schedule,
        *,
        memory_budget: int | None = None,
        prune: bool = True,
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
        self._prune = check_bool(prune, "prune")
        self._singular = bool((data.eigenvalues == 0).any())

    @property
    def dim(self) -> int:
        return self.data.dim

    def __repr__(self) -> str:
        return f"MarginalPath({self.data!r}, {self.schedule!r})"

    # -- the engine -----------------------------------------------------------------------
    def evaluate(
        self, x: Any, t: Any, quantities: Iterable[str] | str, *, y: Any = None
    ) -> dict[str, Array]:
        """Evaluate several quantities in one pass (sharing rotations and responsibilities).

        ``quantities`` are names of :data:`QUANTITY_INFO` (0.1's ``"x_hat"``/``"eps_hat"`` are
        deprecated aliases); returns a dict keyed by the names as given, each array of the
        quantity's shape. With ``y`` (an int label or an (n,) integer array of labels of
        labelled data) each quantity is the one of p_t(· | y), and :data:`QUANTITIES_GIVEN_Y`
        (the exact classifier) are also accepted.
        """
        asked = (quantities,) if isinstance(quantities, str) else tuple(quantities)
        known = tuple(n for n, q in QUANTITY_INFO.items() if y is not None or not q.given_y)
        try:
            names = canonical_quantities(asked, known=known, stacklevel=2)
        except ValueError as e:
            if y is None and set(asked) & set(QUANTITIES_GIVEN_Y):
                raise ValueError(f"{e} (classifier quantities need y=)") from None
            raise
        want = tuple(dict.fromkeys(names))
        if y is not None and (_dask.is_dask(x) or _dask.is_dask(t)):
            raise ValueError("y: conditional quantities of Dask arrays are not supported")
        if _dask.is_dask(x) or _dask.is_dask(t):
            out = _dask.evaluate(self, x, t, want)
        else:
            out = self._evaluate(x, t, want, y)
        return {a: out[q] for a, q in zip(asked, names, strict=True)}

    def _evaluate(self, x: Any, t: Any, want: tuple[str, ...], y: Any) -> dict[str, Array]:
        x, xp = points(x, self.dim)
        n, d = x.shape
        lab = None if y is None else _Labels(self.data, y, n, xp, device(x), x.dtype)
        # One shared t keeps the per-time coefficients at k·d instead of n·k·d; a constant
        # (n,) array, as ODE solvers pass, takes the same route.
        shared = _is_scalar(t)
        tt = times(t, 1 if shared else n, xp, x.dtype, device(x))
        # (not for a t that is differentiated: each row's t gets its own gradient)
        if not shared and n > 1 and mutable(tt) and not traced(tt) and bool(xp.all(tt == tt[0])):
            tt, shared = tt[:1], True
        sv = self.schedule(tt)
        self._check_valid(sv, xp, want)
        p = self.data.params(xp, device(x), x.dtype)
        k = self.data.n_components
        item = 4 if x.dtype == xp.float32 else 8
        full = self.data.kind == "full"

        def row_bytes(kk: int) -> int:
            """Temporaries per row when kk components are evaluated."""
            b = 12 * kk * d
            if "jacobian" in want:
                b += (4 * kk * d * d if full else 2 * kk * d) + 3 * d * d
            return b * item

        out = _Output(n, x, xp)

        def dense(rows: slice | Array) -> dict[str, Array] | None:
            """Evaluate the rows (a slice, or indices into x) with every component."""
            for sub in chunks(_size(rows), row_bytes(k), self._budget, cpu=on_cpu(x)):
                idx = _sub(rows, sub, xp)
                svr = sv.rows(idx, xp)
                tm = _gmm.compute(p, take_rows(x, idx, xp), svr.alpha, svr.beta, xp)
                vals = _Chunk(tm, svr, xp, None if lab is None else lab.rows(idx, xp)).values(want)
                if isinstance(idx, slice) and idx.start == 0 and idx.stop == n:
                    return vals
                out.put(idx, vals)
                del tm, vals
            return None

        # a plan holds bounds for every component and the compact layout's temporaries
        plan_bytes = (k * (p.low_mu.shape[1] + 16)) * item + row_bytes(_prune.max_slots(k))
        if (
            lab is not None
            or immutable(x)
            or k < 4
            or not self._prune
            or plan_bytes > memory_budget(self._budget)
        ):
            # given y the class's components must stay, whatever the others do; JAX arrays
            # (and tracers) have no values to plan from and no in-place outputs; a budget
            # below one row's plan leaves no room to plan
            whole = dense(slice(0, n))
            return whole if whole is not None else out.result()
        cov = any(QUANTITY_INFO[q].between_components for q in want)
        for sl in chunks(n, plan_bytes, self._budget, cpu=False):
            xs = x[sl, ...]
            found = _prune.compute(p, xs, sv.rows(sl, xp), xp, covariance=cov)
            if found is None:
                whole = dense(sl)
                if whole is not None:
                    return whole
                continue
            found_dense = found.dense
            for rows_h, tm in found.pieces:
                rows = from_numpy(rows_h + sl.start, xp, device(x), xp.int64)
                svp = sv.rows(rows, xp)
                out.put(rows, _Chunk(tm, svp, xp).values(want))
            del found
            if found_dense.size:
                dense(from_numpy(found_dense + sl.start, xp, device(x), xp.int64))
        return out.result()

    def _check_valid(self, sv: ScheduleValues, xp: Any, want: tuple[str, ...]) -> None:
        if traced(sv.alpha, sv.beta, sv.alpha_dot, sv.beta_beta_dot):
            return  # no values under JAX tracing; eager calls make these checks
        if self._singular and not bool(xp.all(sv.beta > 0)):
            raise ValueError(
                f"t: p_data has singular covariances ({self.data.kind} data), so p_t is not a "
                "density where β_t = 0 (t = 1); use t < 1"
            )
        info = [QUANTITY_INFO[q] for q in want]
        before = [q.name for q in info if q.before_one]
        if before and not bool(xp.all(sv.beta > 0)):
            raise ValueError(f"t: {', '.join(before)} needs β_t > 0 (t < 1)")
        if any(q.needs_rates for q in info):
            ok = xp.all(xp.isfinite(sv.alpha_dot)) & xp.all(xp.isfinite(sv.beta_beta_dot))
            if not bool(ok):
                raise ValueError(f"t: {self.schedule!r} has an infinite α̇ or ββ̇ at some t")

    def _one(self, x: Any, t: Any, name: str, y: Any = None) -> Array:
        return self.evaluate(x, t, (name,), y=y)[name]

    # -- public quantities ----------------------------------------------------------------
    def log_prob(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """log p_t(x), shape (n,)."""
        return self._one(x, t, "log_prob", y)

    def score(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """∇ log p_t(x) = Σ_k γ_k(x) (−S_k⁻¹ (x − α μ_k)), shape (n, d)."""
        return self._one(x, t, "score", y)

    def vector_field(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """Marginal vector field u_t(x) = Σ_k γ_k (α̇ μ_k + A_k r_k) = α̇ E[z|x] + β̇ E[ε|x]."""
        return self._one(x, t, "vector_field", y)

    def divergence(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """div u_t(x) = tr ∇u_t(x), shape (n,)."""
        return self._one(x, t, "divergence", y)

    def jacobian(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """∇u_t(x) with entry [i, j] = ∂u_i/∂x_j, shape (n, d, d)."""
        return self._one(x, t, "jacobian", y)

    def dlog_prob_dt(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """∂_t log p_t(x) at fixed x, shape (n,)."""
        return self._one(x, t, "dlog_prob_dt", y)

    def responsibilities(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """γ_k(x) = P(component k | X_t = x), shape (n, k)."""
        return self._one(x, t, "responsibilities", y)

    def posterior_mean(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """E[z | X_t = x], the data prediction x̂, shape (n, d)."""
        return self._one(x, t, "posterior_mean", y)

    def noise_posterior_mean(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """E[ε | X_t = x], the noise prediction ε̂, shape (n, d)."""
        return self._one(x, t, "noise_posterior_mean", y)

    def cfm_floor_integrand(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """ℓ*(t, x) = c_t² tr Cov(z | X_t = x), c_t = α̇_t − β̇_t α_t/β_t, shape (n,); t < 1.

        Its mean over t ~ U[0, 1) and x ~ p_t is the irreducible CFM loss L* (docs/theory.md §10).
        Computed as (α̇β − β̇α)² Σ_k γ_k tr(C_k)/β² + c_t² Σ_k γ_k ||e_k − E[z|x]||², finite
        wherever β_t > 0 even when c_t is large.
        """
        return self._one(x, t, "cfm_floor_integrand", y)

    def posterior_cov_trace(self, x: Any, t: Any, *, y: Any = None) -> Array:
        """tr Cov(z | X_t = x), shape (n,)."""
        return self._one(x, t, "posterior_cov_trace", y)

    def classifier_log_prob(self, x: Any, t: Any, *, y: Any) -> Array:
        """Exact classifier log p_t(y | x) = log Σ_{k∈y} γ_k(x), shape (n,) (labelled data)."""
        return self._one(x, t, "classifier_log_prob", y)

    def classifier_score(self, x: Any, t: Any, *, y: Any) -> Array:
        """∇_x log p_t(y | x) = Σ_{k∈y} γ_{k|y} s_k − Σ_k γ_k s_k, shape (n, d).

        The classifier-guidance direction, from the per-component scores s_k = −S_k⁻¹ r_k of
        the eigenbasis kernel (no differentiation).
        """
        return self._one(x, t, "classifier_score", y)

    def sample(
        self, n: int, t: Any, *args: Any, rng: Any = MISSING, like: Any = None, y: Any = None
    ) -> Array:
        """Draw n exact samples of p_t as α_t z + β_t ε, z ~ p_data, ε ~ N(0, I).

        Float64 NumPy, or the namespace and dtype of ``like``; ``t`` a float or (n,) array;
        ``rng`` keyword-only (positional is deprecated), a Generator or an int seed. With ``y``
        (a label, or an (n,) integer array of labels) z ~ p_data(· | y) per row.
        """
        g = positional_rng(args, rng, "MarginalPath.sample")
        z = self.data.sample(n, rng=g) if y is None else _sample_given(self.data, n, y, g)
        if like is not None:
            z = _like(z, like)
            if isinstance(t, np.ndarray):
                t = _like(t, like)
        return self.path.draw(z, t, rng=g).x


@final
class _Chunk:
    """The quantities of one chunk of rows, each computed once (u and s are shared).

    Each method is the formula of the quantity of :data:`QUANTITY_INFO` with its name.
    """

    def __init__(
        self,
        tm: _gmm.Terms,
        sv: ScheduleValues,
        xp: Any,
        labels: tuple[Array, Array] | None = None,
    ) -> None:
        # ``sv`` holds the schedule at this chunk's rows, or at the one shared t
        # With labels (membership mask, log π_y) every quantity is the one of p_t(· | y), from
        # the class's renormalised terms; the joint terms stay for the classifier.
        self.joint = tm
        if labels is not None:
            member, self.log_prior = labels
            tm = _gmm.given(tm, member, self.log_prior)
        self.tm = tm
        self.ad = xp.reshape(sv.alpha_dot, (-1, 1, 1))
        self.bbd = xp.reshape(sv.beta_beta_dot, (-1, 1, 1))
        self.sv = sv
        self.cache: dict[str, Array] = {}

    def values(self, want: tuple[str, ...]) -> dict[str, Array]:
        return {name: self.get(name) for name in want}

    def get(self, name: str) -> Array:
        if name not in self.cache:
            self.cache[name] = getattr(self, name)()
        return self.cache[name]

    def log_prob(self) -> Array:
        return self.tm.log_prob

    def responsibilities(self) -> Array:
        return self.tm.responsibilities()

    def score(self) -> Array:
        return _gmm.score(self.tm)

    def vector_field(self) -> Array:
        return _gmm.vector_field(self.tm, self.ad, self.bbd)

    def divergence(self) -> Array:
        u, s = self.get("vector_field"), self.get("score")
        return _gmm.divergence(self.tm, self.ad, self.bbd, u, s)

    def jacobian(self) -> Array:
        u, s = self.get("vector_field"), self.get("score")
        return _gmm.jacobian(self.tm, self.ad, self.bbd, u, s)

    def dlog_prob_dt(self) -> Array:
        return _gmm.dlog_prob_dt(self.tm, self.ad, self.bbd)

    def posterior_mean(self) -> Array:
        return _gmm.posterior_mean(self.tm)

    def noise_posterior_mean(self) -> Array:
        return _gmm.noise_posterior_mean(self.tm)

    def posterior_cov_trace(self) -> Array:
        return _gmm.posterior_cov_trace(self.tm, self.get("posterior_mean"))

    def cfm_floor_integrand(self) -> Array:
        sv = self.sv
        g = sv.alpha_dot * sv.beta - sv.beta_dot * sv.alpha
        return _gmm.cfm_floor_integrand(self.tm, self.get("posterior_mean"), g)

    def classifier_log_prob(self) -> Array:
        return self.tm.log_prob + self.log_prior - self.joint.log_prob

    def classifier_score(self) -> Array:
        return self.get("score") - _gmm.score(self.joint)


class _Output:
    """Per-row results of chunks, assembled into (n, …) arrays.

    Where the namespace writes in place (NumPy, torch, CuPy) each chunk goes straight into a
    preallocated output, by slice or by row indices, so peak memory is the budget plus one
    copy of the output (concatenating would hold it twice); under torch autograd too (index
    assignment is differentiable). JAX arrays are immutable and array_api_strict has no
    assignment by index arrays: there the pieces are concatenated once and put in row order.
    """

    def __init__(self, n: int, x: Array, xp: Any) -> None:
        self.n, self.x, self.xp = n, x, xp
        self.direct = index_assignable(x)
        self.out: dict[str, Array] = {}
        self.rows: list[slice | Array] = []
        self.parts: dict[str, list[Array]] = {}

    def put(self, rows: slice | Array, vals: dict[str, Array]) -> None:
        xp = self.xp
        if not self.direct:
            self.rows.append(rows)
            for q, val in vals.items():
                self.parts.setdefault(q, []).append(val)
            return
        for q, val in vals.items():
            if q not in self.out:
                shape = (self.n, *val.shape[1:])
                self.out[q] = xp.empty(shape, dtype=val.dtype, device=device(self.x))
            self.out[q][rows, ...] = val

    def result(self) -> dict[str, Array]:
        if self.direct:
            return self.out
        xp = self.xp
        whole = {q: xp.concat(v, axis=0) for q, v in self.parts.items()}
        if all(isinstance(r, slice) for r in self.rows):
            return whole  # chunks in row order
        dev = device(self.x)
        order = xp.concat([_as_index(r, xp, dev) for r in self.rows], axis=0)
        inverse = xp.argsort(order, stable=True)
        return {q: xp.take(v, inverse, axis=0) for q, v in whole.items()}


def _as_index(rows: slice | Array, xp: Any, dev: Any) -> Array:
    if isinstance(rows, slice):
        return xp.arange(rows.start, rows.stop, dtype=xp.int64, device=dev)
    return rows


def _size(rows: slice | Array) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else int(rows.shape[0])


def _sub(rows: slice | Array, sub: slice, xp: Any) -> slice | Array:
    """Rows ``sub`` (a slice into ``rows``) of ``rows``, as a slice or indices into x."""
    if isinstance(rows, slice):
        return slice(rows.start + sub.start, rows.start + sub.stop)
    return rows[sub]


def _check_budget(b: int) -> int:
    return memory_budget(b)


def _is_scalar(t: Any) -> bool:
    if isinstance(t, (int, float)):
        return True
    return getattr(t, "ndim", None) == 0


def _sample_given(data: GaussianMixture, n: int, y: Any, g: np.random.Generator) -> np.ndarray:
    """z ~ p_data(· | y_i) for each row, class by class (y one label or (n,) labels)."""
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return data.given(y).sample(n, rng=g)
    lab = to_numpy(y)
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer) or lab.shape != (n,):
        raise ValueError(f"y must be an int label or an (n,) = ({n},) integer array")
    z = np.empty((n, data.dim))
    for c in np.unique(lab):
        rows = lab == c
        z[rows] = data.given(c).sample(int(rows.sum()), rng=g)
    return z


class _Labels:
    """Validated labels y: the (m, k) class-membership mask and (m,) log π_y, m = 1 or n."""

    def __init__(
        self, data: GaussianMixture, y: Any, n: int, xp: Any, dev: Any, dtype: Any
    ) -> None:
        if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            mask = data._members(y, "y")[None, :]
        else:
            try:
                arr = to_numpy(y)
            except TypeError:
                raise TypeError(
                    f"y must be an int label or an (n,) integer array, got {type(y).__name__}"
                ) from None
            if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"y must hold integer labels, got dtype {arr.dtype}")
            if arr.shape != (n,):
                raise ValueError(f"y must be an int or have shape ({n},), got {arr.shape}")
            classes = data.classes
            unknown = np.setdiff1d(arr, classes)
            if unknown.size:
                raise ValueError(
                    f"y holds labels {unknown.tolist()} that are not classes {classes.tolist()}"
                )
            mask = data._need_labels()[None, :] == arr[:, None]
            for c in np.unique(arr):
                data._members(c, "y")  # refuses classes of zero weight
        with np.errstate(divide="ignore"):
            log_prior = np.log((mask * data.weights[None, :]).sum(axis=1))
        self.shared = mask.shape[0] == 1
        self.member = from_numpy(mask, xp, dev, xp.bool)
        self.log_prior = from_numpy(log_prior, xp, dev, dtype)

    def rows(self, rows: slice | Array, xp: Any) -> tuple[Array, Array]:
        if self.shared:
            return self.member, self.log_prior
        return take_rows(self.member, rows, xp), take_rows(self.log_prior, rows, xp)
