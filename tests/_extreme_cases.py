"""Mixtures and points at the edge of fmref's numerical contract (tests only).

A case is built from a few numbers (kind, k, d, condition number, distance in standard
deviations, t, dtype, seed), so a property test can draw them and report what it tried.
"""

from __future__ import annotations

from dataclasses import dataclass

import _oracle
import numpy as np

from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture
from fmref.schedules import Cosine, Linear, Schedule, SqrtBeta

SCHEDULES: dict[str, Schedule] = {"linear": Linear(), "cosine": Cosine(), "sqrt_beta": SqrtBeta()}
QUANTITIES = (
    "log_prob",
    "score",
    "vector_field",
    "divergence",
    "jacobian",
    "dlog_prob_dt",
    "responsibilities",
    "posterior_mean",
    "noise_posterior_mean",
    "posterior_cov_trace",
)
TOL = {"float64": (1e-7, 1e-9), "float32": (1e-4, 1e-5)}


@dataclass(frozen=True)
class Extreme:
    kind: str  # isotropic, diagonal, full, dirac
    k: int
    d: int
    cond: float  # condition number of every Σ_k (full and diagonal kinds)
    dist: float  # Mahalanobis distance of x from the nearest chosen mode under S_k(t)
    t: float
    dtype: str
    schedule: str
    seed: int
    mean_scale: float = 3.0


def build(c: Extreme) -> tuple[GaussianMixture, np.ndarray, np.ndarray]:
    """Return (mixture, dense covariances (k, d, d), points (3, d)) for case ``c``."""
    g = np.random.default_rng(c.seed)
    k, d = c.k, c.d
    means = c.mean_scale * g.standard_normal((k, d))
    scales = np.exp(g.uniform(np.log(0.3), np.log(3.0), k))
    lam = (
        scales[:, None] * np.logspace(0, -np.log10(c.cond), d)[None, :]
        if d > 1
        else (scales[:, None] * np.ones((k, 1)))
    )
    if c.kind == "dirac":
        covs_arg, dense = np.zeros(k), np.zeros((k, d, d))
    elif c.kind == "isotropic":
        covs_arg = scales
        dense = scales[:, None, None] * np.eye(d)
    elif c.kind == "diagonal":
        covs_arg = np.stack([g.permutation(row) for row in lam])
        dense = np.stack([np.diag(row) for row in covs_arg])
    else:
        q = np.linalg.qr(g.standard_normal((k, d, d)))[0]
        dense = np.einsum("kij,kj,klj->kil", q, lam, q)
        dense = 0.5 * dense + 0.5 * np.swapaxes(dense, 1, 2)
        covs_arg = dense
    w = g.dirichlet(np.ones(k))
    gm = GaussianMixture(w, means, covs_arg)
    dense = gm.full_covs() if c.kind == "full" else dense
    # points at Mahalanobis distance c.dist from α μ_j under S_j = α² Σ_j + β² I, j random
    sv = SCHEDULES[c.schedule](np.array([c.t]))
    a, b = float(sv.alpha[0]), float(sv.beta[0])
    x = np.empty((3, d))
    for i in range(3):
        j = g.integers(k)
        s = a * a * dense[j] + b * b * np.eye(d)
        lam_s, q_s = np.linalg.eigh(s)
        u = g.standard_normal(d)
        u *= c.dist / np.linalg.norm(u)
        x[i] = a * means[j] + q_s @ (np.sqrt(np.maximum(lam_s, 0)) * u)
    return gm, dense, x.astype(c.dtype).astype(np.float64)


def errors(c: Extreme) -> dict[str, float]:
    """Worst error / tolerance per quantity against the 50-digit oracle (≤ 1 passes).

    Scalars are judged by |got − want| ≤ atol + rtol·|want|; vector and matrix rows by the
    same rule with |want| replaced by the row's largest entry (a small entry of a large vector
    is only ever accurate relative to the vector); ∂_t log p and the divergence, sums of terms
    of either sign, relative to Σ_k γ_k Σ |term| (their condition scale, from the oracle).
    """
    gm, dense, x = build(c)
    sched = SCHEDULES[c.schedule]
    mp = MarginalPath(gm, sched)
    # The kernel is judged given the schedule's values in the working dtype (the schedules'
    # own accuracy is tested against mpmath separately).
    sv = sched(np.array([c.t], dtype=c.dtype))
    vals = tuple(float(getattr(sv, f)[0]) for f in ("alpha", "beta", "alpha_dot", "beta_beta_dot"))
    want = _oracle.marginal(gm.weights, gm.means, dense, x, c.t, vals)
    qs = tuple(q for q in QUANTITIES if q in want)
    got = mp.evaluate(x.astype(c.dtype), np.asarray(c.t, dtype=c.dtype), qs)
    rtol, atol = TOL[c.dtype]
    out = {}
    for q in qs:
        w = want[q]
        gq = np.asarray(got[q], dtype=np.float64)
        if q in ("dlog_prob_dt", "divergence"):
            scale = want[q + "_scale"]
        elif w.ndim == 1:
            scale = np.abs(w)
        else:
            scale = np.max(np.abs(w.reshape(len(w), -1)), axis=1)
        scale = scale.reshape((-1,) + (1,) * (w.ndim - 1))
        bad = np.abs(gq - w) / (atol + rtol * scale)
        out[q] = float(np.max(np.where(np.isfinite(bad), bad, np.inf)))
    return out
