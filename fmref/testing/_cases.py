"""The cases of a golden-vector suite: schedules × mixture kinds × times, computed in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..marginals import MarginalPath
from ..mixtures import GaussianMixture
from ..paths import GaussianPath
from ..schedules import SCHEDULES, Schedule

#: (name, params) of the schedules in a suite; names are keys of fmref.schedules.SCHEDULES.
SUITE_SCHEDULES: tuple[tuple[str, dict[str, float]], ...] = (
    ("linear", {}),
    ("cosine", {}),
    ("polynomial", {"p": 2.0}),
    ("linear_vp", {}),
    ("vp", {"b": 0.1, "B": 20.0}),
    ("sqrt_beta", {}),
)

#: kind → (k, d) of the mixtures in a suite.
SUITE_MIXTURES: dict[str, tuple[int, int]] = {
    "isotropic": (3, 2),
    "diagonal": (2, 3),
    "full": (3, 3),
    "dirac": (4, 2),
}

#: Times of every case (t = 1 is left out for Dirac data, where p_1 has no density).
SUITE_TIMES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0)

#: Exact outputs: name → (description, shape with n, d).
OUTPUTS: dict[str, tuple[str, str]] = {
    "log_prob": ("log p_t(x)", "(n,)"),
    "score": ("∇_x log p_t(x)", "(n, d)"),
    "vector_field": ("marginal vector field u_t(x)", "(n, d)"),
    "divergence": ("div u_t(x)", "(n,)"),
    "dlog_prob_dt": ("∂_t log p_t(x) at fixed x", "(n,)"),
    "target": ("CFM regression target α̇_t z + β̇_t ε (NaN where β̇_t is infinite)", "(n, d)"),
    "x_hat": ("posterior mean E[z | X_t = x]", "(n, d)"),
}

#: Inputs of every case: name → description.
INPUTS: dict[str, str] = {
    "t": "time per row, shape (n,); t = 0 noise, t = 1 data",
    "z": "data point z ~ p_data, shape (n, d)",
    "eps": "noise ε ~ N(0, I), shape (n, d)",
    "x": "x = α_t z + β_t ε ~ p_t, shape (n, d)",
    "alpha": "α_t per row",
    "beta": "β_t per row",
    "alpha_dot": "α̇_t per row",
    "beta_dot": "β̇_t per row (inf at t = 1 for singular schedules)",
}


def make_schedule(name: str, params: dict[str, Any]) -> Schedule:
    """Build a named schedule of :data:`fmref.schedules.SCHEDULES` with ``params``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule name must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](**params)


def make_mixture(kind: str, g: np.random.Generator) -> GaussianMixture:
    """A well-conditioned random mixture of ``kind`` (eigenvalues in [0.2, 2], means in [−3, 3])."""
    k, d = SUITE_MIXTURES[kind]
    w = g.uniform(0.5, 1.5, k)
    w = w / w.sum()
    means = g.uniform(-3.0, 3.0, (k, d))
    if kind == "isotropic":
        covs = g.uniform(0.2, 2.0, k)
    elif kind == "diagonal":
        covs = g.uniform(0.2, 2.0, (k, d))
    elif kind == "full":
        q, r = np.linalg.qr(g.standard_normal((k, d, d)))
        q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
        lam = g.uniform(0.2, 2.0, (k, d))
        covs = np.einsum("kij,kj,klj->kil", q, lam, q)
        covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    else:
        covs = np.zeros(k)
    return GaussianMixture(w, means, covs)


def case_arrays(
    schedule: Schedule, data: GaussianMixture, g: np.random.Generator, per_time: int
) -> dict[str, np.ndarray]:
    """Inputs and exact outputs of one case, float64, rows grouped by time."""
    times = [t for t in SUITE_TIMES if not (data.kind == "dirac" and t == 1.0)]
    t = np.repeat(np.asarray(times, dtype=np.float64), per_time)
    n = t.shape[0]
    z = data.sample(n, rng=g)
    eps = g.standard_normal(z.shape)
    path = GaussianPath(schedule)
    x = np.asarray(path.sample(z, t, eps))
    sv = schedule(t)
    out: dict[str, np.ndarray] = {"t": t, "z": z, "eps": eps, "x": x}
    for name in ("alpha", "beta", "alpha_dot", "beta_dot"):
        out[name] = np.asarray(getattr(sv, name), dtype=np.float64)
    r = MarginalPath(data, path).evaluate(
        x, t, ("log_prob", "score", "vector_field", "divergence", "dlog_prob_dt", "x_hat")
    )
    out.update({k: np.asarray(v, dtype=np.float64) for k, v in r.items()})
    finite = np.isfinite(out["beta_dot"])
    target = np.full_like(z, np.nan)
    if finite.any():
        target[finite] = np.asarray(path.target(z[finite], eps[finite], t[finite]))
    out["target"] = target
    return out


def mixture_params(data: GaussianMixture) -> dict[str, Any]:
    """Mixture parameters as JSON-ready lists (floats round-trip exactly through repr)."""
    return {
        "kind": data.kind,
        "weights": data.weights.tolist(),
        "means": data.means.tolist(),
        "covs": data.covs.tolist(),
    }
