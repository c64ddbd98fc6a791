"""Hypothesis strategies and brute-force references for the core test files (tests only).

The references are deliberately naive and share no code path with fmref's eigenbasis kernel:
per-component ``scipy.stats.multivariate_normal`` densities built from the dense covariances
the test itself made, dense linear algebra, central finite differences, and self-normalised
importance sampling (IS) over z ~ p_data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref.mixtures import GaussianMixture
from fmref.schedules import VP, Cosine, Linear, LinearVP, Polynomial, Schedule, SqrtBeta

#: Every named schedule the property tests draw from (Polynomial with p >= 1 so α̇(0) is finite).
SCHEDULES: dict[str, Schedule] = {
    "linear": Linear(),
    "cosine": Cosine(),
    "poly2": Polynomial(2.0),
    "poly3": Polynomial(3.0),
    "linear_vp": LinearVP(),
    "vp": VP(),
    "sqrt_beta": SqrtBeta(),
}

#: The ci profile plus the backend fixture: the fixture is an immutable record, safe to reuse.
PROPERTY = settings(
    settings.get_profile("ci"),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@dataclass(frozen=True)
class Case:
    """A mixture together with the dense parameters the test built it from."""

    gm: GaussianMixture
    weights: np.ndarray  # (k,)
    means: np.ndarray  # (k, d)
    covs: np.ndarray  # (k, d, d) dense, as the test built them
    kind: str

    @property
    def k(self) -> int:
        return int(self.means.shape[0])

    @property
    def d(self) -> int:
        return int(self.means.shape[1])


def make_case(
    seed: int, k: int, d: int, kind: str, *, lam: tuple[float, float] = (0.2, 2.0)
) -> Case:
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


@st.composite
def cases(
    draw: Any,
    kinds: tuple[str, ...] = ("isotropic", "diagonal", "full"),
    max_k: int = 8,
    max_d: int = 8,
) -> Case:
    """Random mixtures: k in [1, max_k], d in [1, max_d], the given covariance kinds."""
    kind = draw(st.sampled_from(kinds))
    k = draw(st.integers(1, max_k))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    return make_case(seed, k, d, kind)


def schedule_names(exclude: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    return st.sampled_from([s for s in SCHEDULES if s not in exclude])


def times(lo: float = 0.0, hi: float = 1.0) -> st.SearchStrategy[float]:
    """Times in [lo, hi]; endpoints are pinned by explicit examples in the tests."""
    return st.floats(lo, hi)


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


def ab(schedule: Schedule, t: float) -> tuple[float, float, float, float]:
    """(α, β, α̇, ββ̇) at a scalar t as Python floats."""
    sv = schedule(np.float64(t))
    return float(sv.alpha), float(sv.beta), float(sv.alpha_dot), float(sv.beta_beta_dot)


# -- brute-force densities -----------------------------------------------------------------
def ref_log_prob(case: Case, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log Σ_k π_k N(x; α μ_k, α² Σ_k + β² I) by scipy, component by component."""
    d = case.d
    comp = np.stack(
        [
            np.log(case.weights[j])
            + multivariate_normal(
                alpha * case.means[j], alpha**2 * case.covs[j] + beta**2 * np.eye(d)
            ).logpdf(x)
            for j in range(case.k)
        ],
        axis=-1,
    )
    return np.asarray(logsumexp(comp.reshape(x.shape[0], case.k), axis=1))


def ref_responsibilities(case: Case, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    d = case.d
    comp = np.stack(
        [
            np.log(case.weights[j])
            + multivariate_normal(
                alpha * case.means[j], alpha**2 * case.covs[j] + beta**2 * np.eye(d)
            ).logpdf(x)
            for j in range(case.k)
        ],
        axis=-1,
    ).reshape(x.shape[0], case.k)
    return np.exp(comp - logsumexp(comp, axis=1, keepdims=True))


def min_std(case: Case, alpha: float, beta: float) -> float:
    """Smallest standard deviation of any component of p_t (sets finite-difference steps)."""
    lam = min(np.linalg.eigvalsh(c).min() for c in case.covs)
    return float(np.sqrt(alpha**2 * max(lam, 0.0) + beta**2))


# -- finite differences (fourth-order central stencil, error O(h⁴)) -------------------------
_W = ((-2.0, 1.0), (-1.0, -8.0), (1.0, 8.0), (2.0, -1.0))


def _shifted(x: np.ndarray, h: float) -> np.ndarray:
    """All stencil points x + s h e_j stacked: shape (4, d, m, d), evaluated in one call."""
    d = x.shape[1]
    eye = np.eye(d)
    return np.stack([x[None, :, :] + s * h * eye[:, None, :] for s, _ in _W])


def fd_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: float) -> np.ndarray:
    """∇f for f: (m, d) → (m,), shape (m, d)."""
    m, d = x.shape
    vals = f(_shifted(x, h).reshape(-1, d)).reshape(4, d, m)
    return (sum(w * vals[i] for i, (_, w) in enumerate(_W)) / (12 * h)).T


def fd_jac(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: float) -> np.ndarray:
    """J[:, i, j] = ∂f_i/∂x_j for f: (m, d) → (m, d), shape (m, d, d)."""
    m, d = x.shape
    vals = f(_shifted(x, h).reshape(-1, d)).reshape(4, d, m, d)  # [stencil, j, row, i]
    return np.transpose(sum(w * vals[i] for i, (_, w) in enumerate(_W)) / (12 * h), (1, 2, 0))


def fd_dt(f: Callable[[float], Any], t: float, h: float) -> Any:
    """d f/dt at an interior t, fourth-order central stencil."""
    return sum(w * np.asarray(f(t + s * h)) for s, w in _W) / (12 * h)


# -- self-normalised importance sampling of the posterior of z given X_t = x ----------------
@dataclass(frozen=True)
class Posterior:
    """Weighted draws z_i with normalised weights w_i approximating p(z | X_t = x)."""

    z: np.ndarray  # (N, d)
    w: np.ndarray  # (N,), sums to 1

    @property
    def ess(self) -> float:
        return float(1.0 / np.sum(self.w**2))

    def mean(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Estimate E[f(z) | x] and its delta-method standard error; f has shape (N, ...)."""
        est = np.tensordot(self.w, f, axes=1)
        dev = f - est
        se = np.sqrt(np.tensordot(self.w**2, dev**2, axes=1))
        return est, se


def posterior_is(
    case: Case, x: np.ndarray, alpha: float, beta: float, n: int, rng: np.random.Generator
) -> Posterior:
    """Self-normalised IS for p(z | x) ∝ p_data(z) N(x; α z, β² I), one point x of shape (d,).

    Defensive proposal q = ½ p_data + ½ N(x/α, (1.5 β/α)² I): the first half covers small α,
    the second covers a sharp likelihood (α near 1), so the weights stay bounded by design.
    Target weights use scipy's p_data density and the textbook Gaussian likelihood.
    """
    d = case.d
    half = n // 2
    z_data = case.gm.sample(half, rng)
    # When β/α ≥ 100 the likelihood is flat across p_data's support: p_data alone suffices.
    use_lik = beta > 0 and alpha > 0.01 * beta
    if use_lik:
        c, s = x / alpha, 1.5 * beta / alpha
        z_lik = c + s * rng.standard_normal((n - half, d))
        z = np.concatenate([z_data, z_lik])
    else:
        z = np.concatenate([z_data, case.gm.sample(n - half, rng)])
    log_data = ref_log_prob(case, z, 1.0, 0.0)
    if beta > 0:
        log_lik = -0.5 * np.sum((x - alpha * z) ** 2, axis=1) / beta**2
    else:
        log_lik = np.zeros(len(z))
    if use_lik:
        log_g = (
            -0.5 * np.sum((z - c) ** 2, axis=1) / s**2 - d * np.log(s) - 0.5 * d * np.log(2 * np.pi)
        )
        log_q = np.logaddexp(log_data, log_g) - np.log(2.0)
    else:
        log_q = log_data
    logw = log_data + log_lik - log_q
    w = np.exp(logw - logw.max())
    return Posterior(z, w / w.sum())
