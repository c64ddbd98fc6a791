"""The cases of a golden-vector suite: schedules × mixture kinds × times, computed in float64."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from ..marginals import QUANTITY_INFO, MarginalPath, Quantity
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

#: The conditional path's regression target, from each row's z and ε.
TARGET = Quantity(
    "target",
    ("n", "d"),
    "CFM regression target α̇_t z + β̇_t ε (NaN where α̇_t or β̇_t is infinite)",
    needs_rates=True,
)

#: Exact outputs of every case, name → Quantity: the target and records of QUANTITY_INFO.
OUTPUTS: Mapping[str, Quantity] = MappingProxyType(
    {
        q: TARGET if q == "target" else QUANTITY_INFO[q]
        for q in (
            "log_prob",
            "score",
            "vector_field",
            "divergence",
            "dlog_prob_dt",
            "target",
            "posterior_mean",
        )
    }
)

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
    ps = path.draw(z, t, eps=eps)
    out: dict[str, np.ndarray] = {"t": t, "z": z, "eps": eps, "x": np.asarray(ps.x)}
    for name in ("alpha", "beta", "alpha_dot", "beta_dot"):
        out[name] = np.asarray(getattr(ps.schedule, name), dtype=np.float64)
    marginal = tuple(q for q in OUTPUTS if q in QUANTITY_INFO)
    r = MarginalPath(data, path).evaluate(ps.x, t, marginal)
    out.update({k: np.asarray(v, dtype=np.float64) for k, v in r.items()})
    finite = np.isfinite(out["alpha_dot"]) & np.isfinite(out["beta_dot"])
    target = np.full_like(z, np.nan)
    if finite.any():
        target[finite] = np.asarray(path.draw(z[finite], t[finite], eps=eps[finite]).target)
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
