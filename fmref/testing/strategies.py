"""Hypothesis strategies for users' property tests: mixtures, schedules, times, points of p_t.

Keyword-only and composable: every argument may be a value or a strategy. Importing this
module needs hypothesis; ``import fmref.testing`` does not. fmref's own property tests draw
from these strategies too.

Example::

    from hypothesis import given
    from fmref.testing import strategies as fst

    @given(mp=fst.marginal_paths(dim=2), t=fst.times(include_endpoints=False), data=st.data())
    def test_my_field(mp, t, data):
        x = data.draw(fst.points(mp, t, n=16))
        np.testing.assert_allclose(my_field(x, t), mp.vector_field(x, t), rtol=1e-7, atol=1e-9)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ..marginals import MarginalPath
from ..mixtures import CovKind, GaussianMixture
from ..schedules import VP, Cosine, Linear, LinearVP, Polynomial, Schedule, SqrtBeta

__all__ = [
    "NAMED_SCHEDULES",
    "gaussian_mixtures",
    "marginal_paths",
    "points",
    "schedule_names",
    "schedules",
    "times",
]

_KINDS: tuple[CovKind, ...] = ("isotropic", "diagonal", "full", "dirac")
_ONE_TO_THREE = st.integers(1, 3)


def _draw(draw: Any, v: Any) -> Any:
    return draw(v) if isinstance(v, st.SearchStrategy) else v


def _unit_floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def gaussian_mixtures(
    draw: Any,
    *,
    dim: int | st.SearchStrategy[int] = _ONE_TO_THREE,
    components: int | st.SearchStrategy[int] = _ONE_TO_THREE,
    covariance: CovKind | st.SearchStrategy[CovKind] | None = None,
    eigenvalues: tuple[float, float] = (0.1, 4.0),
    mean_range: float = 3.0,
    min_weight: float = 0.05,
) -> GaussianMixture:
    """Draw a well-conditioned p_data = Σ_k π_k N(μ_k, Σ_k).

    Eigenvalues of every Σ_k lie in ``eigenvalues`` (so cond(Σ_k) ≤ hi/lo), means in
    [−mean_range, mean_range]^d, weights ≥ ``min_weight`` before normalising. ``covariance``
    None draws the kind; "dirac" gives Σ_k = 0 (valid for t < 1 only).
    """
    d, k = _draw(draw, dim), _draw(draw, components)
    kind = draw(st.sampled_from(_KINDS)) if covariance is None else _draw(draw, covariance)
    if kind not in _KINDS:
        raise ValueError(f"covariance must be one of {_KINDS}, got {kind!r}")
    lo, hi = eigenvalues
    if not (0 < lo <= hi):
        raise ValueError(f"eigenvalues must be a range 0 < lo <= hi, got {eigenvalues!r}")
    w = np.array(draw(st.lists(_unit_floats(min_weight, 1.0), min_size=k, max_size=k)))
    w = w / w.sum()
    mu = draw(st.lists(_unit_floats(-mean_range, mean_range), min_size=k * d, max_size=k * d))
    means = np.array(mu).reshape(k, d)
    n_lam = {"isotropic": k, "diagonal": k * d, "full": k * d, "dirac": 0}[kind]
    lam = np.array(draw(st.lists(_unit_floats(lo, hi), min_size=n_lam, max_size=n_lam)))
    if kind == "isotropic":
        covs = lam
    elif kind == "diagonal":
        covs = lam.reshape(k, d)
    elif kind == "full":
        # A rotation from a drawn seed: Haar-distributed via QR with the sign fix.
        g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        q, r = np.linalg.qr(g.standard_normal((k, d, d)))
        q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
        covs = np.einsum("kij,kj,klj->kil", q, lam.reshape(k, d), q)
        covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    else:
        covs = np.zeros(k)
    return GaussianMixture(w, means, covs)


@st.composite
def schedules(draw: Any, *, include_singular: bool = True) -> Schedule:
    """Draw one of fmref's schedules (Polynomial p ∈ [1, 3]; VP with b ∈ [0.05, 0.5], B ∈ [5, 20]).

    ``include_singular=False`` leaves out those whose β̇ is infinite at t = 1.
    """
    names = ["linear", "cosine", "polynomial"]
    if include_singular:
        names += ["linear_vp", "vp", "sqrt_beta"]
    name = draw(st.sampled_from(names))
    if name == "polynomial":
        return Polynomial(draw(_unit_floats(1.0, 3.0)))
    if name == "vp":
        return VP(b=draw(_unit_floats(0.05, 0.5)), B=draw(_unit_floats(5.0, 20.0)))
    plain: dict[str, Schedule] = {
        "linear": Linear(),
        "cosine": Cosine(),
        "linear_vp": LinearVP(),
        "sqrt_beta": SqrtBeta(),
    }
    return plain[name]


#: One instance of each schedule family, by name (Polynomial at p = 2 and 3, VP at its
#: defaults): a fixed set to parametrize over, or to pin with ``hypothesis.example`` so that
#: every family is tested at the ends of [0, 1] whatever the random draws.
NAMED_SCHEDULES: dict[str, Schedule] = {
    "linear": Linear(),
    "cosine": Cosine(),
    "poly2": Polynomial(2.0),
    "poly3": Polynomial(3.0),
    "linear_vp": LinearVP(),
    "vp": VP(),
    "sqrt_beta": SqrtBeta(),
}


def schedule_names(
    *, include_singular: bool = True, exclude: tuple[str, ...] = ()
) -> st.SearchStrategy[str]:
    """Draw a key of :data:`NAMED_SCHEDULES` (a name reads better than a repr in a failure).

    ``include_singular=False`` leaves out the schedules whose β̇ is infinite at t = 1;
    ``exclude`` leaves out the names given.
    """
    unknown = set(exclude) - set(NAMED_SCHEDULES)
    if unknown:
        raise ValueError(f"exclude must name schedules of {sorted(NAMED_SCHEDULES)}, got {unknown}")
    names = [
        n
        for n in NAMED_SCHEDULES
        if n not in exclude and (include_singular or not NAMED_SCHEDULES[n].singular_at_one)
    ]
    if not names:
        raise ValueError("exclude leaves no schedule to draw")
    return st.sampled_from(names)


def times(
    *, include_endpoints: bool = True, min_value: float = 0.0, max_value: float = 1.0
) -> st.SearchStrategy[float]:
    """Draw t in [min_value, max_value]; with ``include_endpoints`` the ends are drawn often."""
    if not (0.0 <= min_value < max_value <= 1.0):
        raise ValueError(f"need 0 <= min_value < max_value <= 1, got {min_value}, {max_value}")
    inner = st.floats(
        min_value,
        max_value,
        exclude_min=not include_endpoints,
        exclude_max=not include_endpoints,
        allow_nan=False,
    )
    if include_endpoints:
        return st.one_of(st.sampled_from([min_value, max_value]), inner)
    return inner


@st.composite
def marginal_paths(
    draw: Any,
    *,
    dim: int | st.SearchStrategy[int] = _ONE_TO_THREE,
    components: int | st.SearchStrategy[int] = _ONE_TO_THREE,
    covariance: CovKind | st.SearchStrategy[CovKind] | None = None,
    include_singular: bool = True,
) -> MarginalPath:
    """Draw MarginalPath(gaussian_mixtures(...), schedules(...))."""
    data = draw(gaussian_mixtures(dim=dim, components=components, covariance=covariance))
    return MarginalPath(data, draw(schedules(include_singular=include_singular)))


@st.composite
def points(
    draw: Any,
    marginal: MarginalPath | st.SearchStrategy[MarginalPath],
    t: float | st.SearchStrategy[float],
    *,
    n: int | st.SearchStrategy[int] = 8,
) -> np.ndarray:
    """Draw n exact samples of p_t (float64, shape (n, d)): points where p_t is not negligible.

    The randomness is a hypothesis-drawn seed, so examples replay and shrink deterministically.
    """
    mp, tt, nn = _draw(draw, marginal), float(_draw(draw, t)), _draw(draw, n)
    if not isinstance(mp, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(mp).__name__}")
    seed = draw(st.integers(0, 2**32 - 1))
    return np.asarray(mp.sample(nn, tt, rng=np.random.default_rng(seed)))
