"""A tour of flow-matching theory: measure that each identity of docs/theory.md holds.

Every number is a residual between fmref's closed form and a route that does not use it:
scipy densities differenced in t and x, importance sampling of p(z | X_t = x) from draws made
here, Monte-Carlo CFM targets, an ODE solve. Run it with

    python examples/theory_tour.py

Data: a 2-D mixture of three full-covariance Gaussians; schedule: Linear (CondOT),
α_t = t, β_t = 1 − t; t = 0 is noise, t = 1 is data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref.exact import gaussian_flow
from fmref.likelihood import log_likelihood
from fmref.losses import cfm_floor, cfm_loss, fm_loss
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture
from fmref.samplers import integrate
from fmref.schedules import Linear

WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[2.0, 1.0], [-2.0, 0.5], [0.0, -2.5]])
COVS = np.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.3, 0.0], [0.0, 0.1]]])
TIMES = (0.3, 0.6, 0.85)

Field = Callable[[Any, Any], Any]


# -- the independent routes: p_data and p_t written with scipy, samples drawn here ----------
def log_p_t(x: np.ndarray, t: float) -> np.ndarray:
    """log p_t(x) = log Σ_k π_k N(x; t μ_k, t² Σ_k + (1 − t)² I), by scipy, shape (n,)."""
    a, b = t, 1.0 - t
    comps = [
        math.log(w) + multivariate_normal(a * m, a * a * c + b * b * np.eye(2)).logpdf(x)
        for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True)
    ]
    return np.asarray(logsumexp(np.stack(comps, axis=-1), axis=-1))


def draw_data(n: int, g: np.random.Generator) -> np.ndarray:
    """z ~ p_data: a component by its weight, then μ_k + L_k ε with Σ_k = L_k L_kᵀ."""
    k = g.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    chol = np.linalg.cholesky(COVS)
    return MEANS[k] + np.einsum("nij,nj->ni", chol[k], g.standard_normal((n, 2)))


def conditional_field(x: np.ndarray, z: np.ndarray, t: Any) -> np.ndarray:
    """Linear's u_t(x|z) = α̇ z + (β̇/β)(x − α z) = (z − x)/(1 − t), written out."""
    return (z - x) / (1.0 - np.reshape(np.asarray(t), (-1, 1)))


def draw_p_t(n: int, t: float, g: np.random.Generator) -> np.ndarray:
    """x ~ p_t as x = α_t z + β_t ε."""
    return t * draw_data(n, g) + (1.0 - t) * g.standard_normal((n, 2))


# -- the checks -------------------------------------------------------------------------------
def continuity_residual(field: Field, x: np.ndarray, t: float, h: float) -> float:
    """‖∂_t p + div(p u)‖ / ‖|∂_t p| + |div(p u)|‖ with p from scipy, central differences."""
    p = lambda xs, s: np.exp(log_p_t(xs, s))  # noqa: E731
    dp_dt = (p(x, t + h) - p(x, t - h)) / (2 * h)
    div_pu = np.zeros(len(x))
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        plus, minus = x + e, x - e
        pu_plus = p(plus, t) * field(plus, np.full(len(x), t))[:, i]
        pu_minus = p(minus, t) * field(minus, np.full(len(x), t))[:, i]
        div_pu += (pu_plus - pu_minus) / (2 * h)
    res = dp_dt + div_pu
    return float(np.linalg.norm(res) / np.linalg.norm(np.abs(dp_dt) + np.abs(div_pu)))


def score_identity_error(mp: MarginalPath, x: np.ndarray, t: float) -> float:
    """max |u − [(α̇/α) x + (α̇β²/α − ββ̇) s]| / max |u| with s = ∇ log p_t by differences."""
    h = 1e-3
    s = np.zeros_like(x)
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        # Fourth-order central stencil: truncation ~ h⁴ f⁽⁵⁾/30.
        s[:, i] = (
            -log_p_t(x + 2 * e, t)
            + 8 * log_p_t(x + e, t)
            - 8 * log_p_t(x - e, t)
            + log_p_t(x - 2 * e, t)
        ) / (12 * h)
    a, b, ad, bbd = t, 1.0 - t, 1.0, -(1.0 - t)
    via_score = (ad / a) * x + (ad * b * b / a - bbd) * s
    u = np.asarray(mp.vector_field(x, t))
    return float(np.abs(u - via_score).max() / np.abs(u).max())


def divergence_error(mp: MarginalPath, x: np.ndarray, t: float) -> float:
    """max |div u − tr(central-difference Jacobian of u)| / max |div u|."""
    h = 1e-4
    fd = np.zeros(len(x))
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        fd += (
            np.asarray(mp.vector_field(x + e, t))[:, i]
            - np.asarray(mp.vector_field(x - e, t))[:, i]
        ) / (2 * h)
    div = np.asarray(mp.divergence(x, t))
    return float(np.abs(div - fd).max() / np.abs(div).max())


def importance_sampling_z(
    mp: MarginalPath, x: np.ndarray, t: float, g: np.random.Generator, n: int
) -> tuple[float, float]:
    """Largest |z-score| of u_t(x) against E[u_t(x|z) | X_t = x] by self-normalised IS.

    Proposal p_data, weight N(x; α z, β² I) ∝ exp(−‖x − α z‖²/2β²); the conditional field
    u_t(x|z) = (z − x)/(1 − t). Returns (max |z|, min effective sample size).
    """
    a, b = t, 1.0 - t
    u = np.asarray(mp.vector_field(x, t))
    worst, min_ess = 0.0, math.inf
    for xi, ui in zip(x, u, strict=True):
        z = draw_data(n, g)
        logw = -0.5 * np.sum((xi - a * z) ** 2, axis=1) / (b * b)
        w = np.exp(logw - logw.max())
        w /= w.sum()
        u_cond = conditional_field(xi[None, :], z, t)
        est = w @ u_cond
        se = np.sqrt((w * w) @ (u_cond - est) ** 2)  # delta-method standard error
        worst = max(worst, float(np.abs((ui - est) / se).max()))
        min_ess = min(min_ess, float(1.0 / np.sum(w * w)))
    return worst, min_ess


def loss_identity_z(
    mp: MarginalPath, field: Field, n: int, seed: int
) -> tuple[float, dict[str, float]]:
    """(L_CFM − L_FM − L*) / its standard error, per-sample on common random numbers."""
    cfm = cfm_loss(field, mp, n=n, rng=seed)
    fm = fm_loss(field, mp, n=n, rng=seed)
    floor = cfm_floor(mp, n=n, rng=seed)
    diff = cfm.samples - fm.samples - floor.samples
    z = float(diff.mean() / (diff.std(ddof=1) / math.sqrt(n)))
    return z, {"cfm": cfm.value, "fm": fm.value, "floor": floor.value, "floor_se": floor.stderr}


def main() -> dict[str, float]:
    """Run every check, print a table, and return the residuals by name."""
    g = np.random.default_rng(2024)
    data = GaussianMixture(WEIGHTS, MEANS, COVS)
    mp = MarginalPath(data, Linear())
    out: dict[str, float] = {}

    x = {t: draw_p_t(8, t, g) for t in TIMES}
    # 1. Continuity equation, with p_t from scipy; the residual must shrink like h².
    big = max(continuity_residual(mp.vector_field, x[t], t, 2e-3) for t in TIMES)
    small = max(continuity_residual(mp.vector_field, x[t], t, 1e-3) for t in TIMES)
    out["continuity_fd_rel"] = small
    out["continuity_fd_order"] = math.log2(big / small)
    # A wrong field, u_t(x|z) at the single z = E[z], must leave an O(1) residual.
    mean_z = data.mean()[None, :]

    def conditional(xs: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return conditional_field(xs, mean_z, ts)

    out["continuity_fd_rel_wrong_field"] = min(
        continuity_residual(conditional, x[t], t, 1e-3) for t in TIMES
    )
    # 2. u = (α̇/α) x + (α̇β²/α − ββ̇) ∇log p_t with the score differenced from scipy's p_t.
    out["score_identity_rel"] = max(score_identity_error(mp, x[t], t) for t in TIMES)
    # 3. div u against the trace of the differenced Jacobian of u.
    out["divergence_fd_rel"] = max(divergence_error(mp, x[t], t) for t in TIMES)
    # 4. u_t(x) = E[u_t(x|z) | X_t = x] by importance sampling.
    zs, ess = zip(*(importance_sampling_z(mp, x[t][:3], t, g, 100_000) for t in TIMES), strict=True)
    out["is_max_abs_z"] = max(zs)
    out["is_min_ess"] = min(ess)
    # 5. E L_CFM = L_FM + L*, for the exact field (L_FM = 0) and for a perturbed one.
    out["cfm_identity_z_exact"], exact_parts = loss_identity_z(mp, mp.vector_field, 20_000, 7)
    perturbed = lambda xs, ts: mp.vector_field(xs, ts) + 0.5 * np.tanh(xs)  # noqa: E731
    out["cfm_identity_z_perturbed"], pert_parts = loss_identity_z(mp, perturbed, 20_000, 8)
    # 6. log p_data through the divergence, against scipy's mixture density at t = 1.
    x1 = draw_data(64, g)
    res = log_likelihood(mp.vector_field, x1, divergence=mp.divergence)
    out["likelihood_max_abs_err"] = float(np.abs(np.asarray(res.log_prob) - log_p_t(x1, 1.0)).max())
    # 7. The single-Gaussian closed-form flow against an adaptive ODE solve of the exact field.
    mean, cov = MEANS[0], COVS[0]
    single = MarginalPath(GaussianMixture.gaussian(mean, cov), Linear())
    x0 = g.standard_normal((64, 2))
    ode = integrate(single.vector_field, x0, method="dop853", rtol=1e-11, atol=1e-11)
    closed = gaussian_flow(mean, cov, Linear(), x0, 1.0)
    out["gaussian_flow_max_abs_err"] = float(np.abs(np.asarray(ode.x) - closed).max())

    print("fmref theory tour (2-D, 3 full-covariance components, Linear schedule)")
    for name, value in out.items():
        print(f"  {name:32s} {value: .3e}")
    for label, parts in (("exact field", exact_parts), ("perturbed field", pert_parts)):
        print(
            f"  {label + ':':17s}L_CFM = {parts['cfm']:.4f}, L_FM = {parts['fm']:.4f}, "
            f"L* = {parts['floor']:.4f} ± {parts['floor_se']:.4f}"
        )
    return out


if __name__ == "__main__":
    main()
