"""Mixtures for the core test files (tests only): fixed cases by seed, and the property-test
harness on top of the public :mod:`fmref.testing.strategies` (fmref's tests dogfood them).

A :class:`Case` carries the dense covariances the test built, so that the references of
``_reference.py`` never go through fmref's eigendecomposition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

from fmref.mixtures import GaussianMixture
from fmref.schedules import Schedule
from fmref.testing import strategies as fst

#: Every named schedule the property tests draw from (Polynomial with p >= 1 so α̇(0) is finite).
SCHEDULES: dict[str, Schedule] = fst.NAMED_SCHEDULES
#: Range of the covariance eigenvalues of every test mixture (well conditioned: cond <= 10).
LAM = (0.2, 2.0)

#: The ci profile plus the backend fixture: the fixture is an immutable record, safe to reuse.
PROPERTY = settings(
    settings.get_profile("ci"),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


schedule_names = fst.schedule_names


@dataclass(frozen=True)
class Case:
    """A mixture together with the dense parameters the test built it from."""

    gm: GaussianMixture
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covs: np.ndarray  # (k, d, d) dense, as the test built them
    kind: str

    @classmethod
    def of(cls, gm: GaussianMixture) -> Case:
        """View a mixture with its dense covariances, built here from the raw parameters."""
        c, (k, d) = gm.covs, gm.means.shape
        if c.shape == (k,):
            dense = c[:, None, None] * np.eye(d)
        elif c.shape == (k, d):
            dense = c[:, :, None] * np.eye(d)
        else:
            dense = c
        return cls(gm, gm.weights, gm.means, dense, gm.kind)

    @property
    def k(self) -> int:
        return int(self.means.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def make_case(seed: int, k: int, d: int, kind: str, *, lam: tuple[float, float] = LAM) -> Case:
    """Build a random well-conditioned mixture (covariance eigenvalues in ``lam``)."""
    g = np.random.default_rng(seed)
    weights = g.dirichlet(np.full(k, 3.0))
    means = g.normal(scale=1.5, size=(k, d))
    if kind == "isotropic":
        var = g.uniform(*lam, size=k)
        arg: np.ndarray = var
        dense = var[:, None, None] * np.eye(d)
    elif kind == "diagonal":
        var = g.uniform(*lam, size=(k, d))
        arg = var
        dense = np.stack([np.diag(v) for v in var])
    elif kind == "full":
        dense = np.empty((k, d, d))
        for j in range(k):
            q, _ = np.linalg.qr(g.normal(size=(d, d)))
            dense[j] = (q * g.uniform(*lam, size=d)) @ q.T
        dense = 0.5 * (dense + np.swapaxes(dense, 1, 2))
        arg = dense
    else:
        raise ValueError(kind)
    return Case(GaussianMixture(weights, means, arg), weights, means, dense, kind)


def cases(
    kinds: tuple[str, ...] = ("isotropic", "diagonal", "full"),
    max_k: int = 8,
    max_d: int = 8,
) -> st.SearchStrategy[Case]:
    """Mixtures from the public strategy: k in [1, max_k], d in [1, max_d], the given kinds."""
    return fst.gaussian_mixtures(
        dim=st.integers(1, max_d),
        components=st.integers(1, max_k),
        covariance=st.sampled_from(kinds),
        eigenvalues=LAM,
    ).map(Case.of)


def times(lo: float = 0.0, hi: float = 1.0) -> st.SearchStrategy[float]:
    """Times in [lo, hi], the ends drawn often (and pinned by :func:`with_endpoints`)."""
    return fst.times(min_value=lo, max_value=hi)


def with_endpoints(lo: float = 0.0, hi: float = 1.0, *, seed: bool = True) -> Callable[[Any], Any]:
    """Add explicit examples: every schedule at both ends of [lo, hi], on varied mixtures.

    Hypothesis' derandomized float draws seldom land on the upper end, and 25 examples need
    not reach every schedule; these 14 cases always run, before the random ones.
    """

    def deco(fn: Any) -> Any:
        for i, name in enumerate(SCHEDULES):
            for j, t in enumerate((lo, hi)):
                kind = ("full", "diagonal", "isotropic")[(i + j) % 3]
                k, d = 1 + (3 * i + j) % 8, 1 + (5 * i + 2 * j) % 8
                kw: dict[str, Any] = {"case": _endpoint_case(90 + 2 * i + j, k, d, kind)}
                kw.update(name=name, t=t)
                if seed:
                    kw["seed"] = 2 * i + j
                fn = example(**kw)(fn)
        return fn

    return deco


@functools.cache
def _endpoint_case(seed: int, k: int, d: int, kind: str) -> Case:
    return make_case(seed, k, d, kind)
