"""Brute-force references for the core test files (tests only).

Deliberately naive, sharing no code path with fmref's eigenbasis kernel: per-component
``scipy.stats.multivariate_normal`` densities built from the dense covariances the test itself
made, dense linear algebra, central finite differences, and self-normalised importance sampling
(IS) over z ~ p_data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from _cases import Case
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref.schedules import Schedule


def ab(schedule: Schedule, t: float) -> tuple[float, float, float, float]:
    """(α, β, α̇, ββ̇) at a scalar t as Python floats."""
    sv = schedule(np.float64(t))
    return float(sv.alpha), float(sv.beta), float(sv.alpha_dot), float(sv.beta_beta_dot)


# -- brute-force densities -----------------------------------------------------------------
def _weighted_component_logs(case: Case, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log π_k + log N(x; α μ_k, α² Σ_k + β² I) by scipy, component by component: (n, k)."""
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
    return comp.reshape(x.shape[0], case.k)


def ref_log_prob(case: Case, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """log Σ_k π_k N(x; α μ_k, α² Σ_k + β² I)."""
    return np.asarray(logsumexp(_weighted_component_logs(case, x, alpha, beta), axis=1))


def ref_responsibilities(case: Case, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """γ_k(x) = π_k N_k(x) / Σ_j π_j N_j(x), shape (n, k)."""
    comp = _weighted_component_logs(case, x, alpha, beta)
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
    z_data = case.gm.sample(half, rng=rng)
    # When β/α ≥ 100 the likelihood is flat across p_data's support: p_data alone suffices.
    use_lik = beta > 0 and alpha > 0.01 * beta
    if use_lik:
        c, s = x / alpha, 1.5 * beta / alpha
        z_lik = c + s * rng.standard_normal((n - half, d))
        z = np.concatenate([z_data, z_lik])
    else:
        z = np.concatenate([z_data, case.gm.sample(n - half, rng=rng)])
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
