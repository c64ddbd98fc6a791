"""The test design: where the oracle looks, and the cases of a golden-vector suite.

One design for the assert helpers and the golden suite (schema version 2): times near both
ends (1e-3, 1e-2, 0.99, 0.999 as well as 0 and 1), tail points 10–50 component standard
deviations from every mode in addition to exact samples of p_t, and mixtures with unequal
weights and full covariances (:func:`oracle_mixture`). Where the exact answer is
ill-conditioned the comparison adds an allowance from :func:`fmref.testing._compare.sensitivity`,
stored in version-2 case files as ``<output>_cond``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from .._check import check_int
from ..guidance import CFG
from ..marginals import QUANTITY_INFO, MarginalPath, Quantity
from ..mixtures import GaussianMixture
from ..paths import GaussianPath
from ..schedules import SCHEDULES, Schedule
from ._compare import sensitivity

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

#: Times of every case (t = 1 is left out for Dirac data, where p_1 has no density); schema 1
#: (fmref 0.1) had 0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.
SUITE_TIMES = (0.0, 1e-3, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0)

#: Distances of tail points from the farthest-reaching mode, in its standard deviations: far
#: enough that every Gaussian density underflows in float64 (beyond ~39 σ) at the far end.
TAIL_SIGMAS = (10.0, 20.0, 30.0, 40.0, 50.0)

#: Labelled cases of a suite (schema 2): (name, params) of each schedule, the mixture's (k, d),
#: its component labels and the CFG weight w of the ``cfg_vector_field`` output.
LABELLED_SCHEDULES: tuple[tuple[str, dict[str, float]], ...] = (
    ("linear", {}),
    ("cosine", {}),
    ("vp", {"b": 0.1, "B": 20.0}),
)
LABELLED_MIXTURE: tuple[int, int] = (4, 2)
LABELLED_LABELS: tuple[int, ...] = (0, 1, 0, 1)
LABELLED_W = 2.5

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

#: Inputs of every case of schema version 1 (fmref 0.1): name → description.
INPUTS_V1: dict[str, str] = {
    "t": "time per row, shape (n,); t = 0 noise, t = 1 data",
    "z": "data point z ~ p_data, shape (n, d)",
    "eps": "noise ε ~ N(0, I), shape (n, d)",
    "x": "x = α_t z + β_t ε ~ p_t, shape (n, d)",
    "alpha": "α_t per row",
    "beta": "β_t per row",
    "alpha_dot": "α̇_t per row",
    "beta_dot": "β̇_t per row (inf at t = 1 for singular schedules)",
}

#: Inputs of every case (schema version 2): those of version 1 and the tail marker.
INPUTS: dict[str, str] = {
    **INPUTS_V1,
    "x": "x = α_t z + β_t ε ~ p_t on sample rows; a point 10–50 standard deviations from every "
    "mode on tail rows, shape (n, d)",
    "tail": "1.0 on tail rows (x far from every mode, not α_t z + β_t ε), 0.0 on sample rows",
}

#: Outputs of the labelled cases (schema 2), name → Quantity; the case gives y per row and w.
LABELLED_OUTPUTS: Mapping[str, Quantity] = MappingProxyType(
    {
        "log_prob_given_y": Quantity("log_prob_given_y", ("n",), "log p_t(x | y)"),
        "score_given_y": Quantity("score_given_y", ("n", "d"), "∇_x log p_t(x | y)"),
        "vector_field_given_y": Quantity(
            "vector_field_given_y", ("n", "d"), "conditional field u_t(x | y)", needs_rates=True
        ),
        "classifier_log_prob": QUANTITY_INFO["classifier_log_prob"],
        "classifier_score": QUANTITY_INFO["classifier_score"],
        "cfg_vector_field": Quantity(
            "cfg_vector_field",
            ("n", "d"),
            "CFG field (1 − w) u_t(x) + w u_t(x | y), w = the case's 'w' (fmref.guidance.CFG)",
            needs_rates=True,
        ),
    }
)

#: Inputs of the labelled cases: name → description.
LABELLED_INPUTS: dict[str, str] = {
    "t": INPUTS["t"],
    "x": "x ~ p_t(· | y) on sample rows; a point 10–50 standard deviations from every mode on "
    "tail rows, shape (n, d)",
    "y": "class label per row (integers stored as float64; passed to an implementation as "
    "int64), shape (n,)",
    "tail": INPUTS["tail"],
}

#: Suffix of the array holding an output's condition estimate Σ_j |∂f/∂a_j|·|a_j| (schema 2).
COND_SUFFIX = "_cond"


def make_schedule(name: str, params: dict[str, Any]) -> Schedule:
    """Build a named schedule of :data:`fmref.schedules.SCHEDULES` with ``params``."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule name must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](**params)


def oracle_mixture(dim: int = 2, *, labelled: bool = False) -> GaussianMixture:
    """Return the default test mixture: unequal weights, full covariances, well separated.

    Three components with weights 0.5, 0.375, 0.125 (labelled: four, labels 0, 1, 0, 1 and
    weights 0.4, 0.1, 0.2, 0.3, unequal within each class), rotated covariances with
    eigenvalues in [0.25, 1.5], means about 2 apart. Fixed (the same for every call): equal
    weights and isotropic covariances hide weight bugs and x/Σ mix-ups, this does not.
    """
    d = check_int(dim, "dim", low=1)
    g = np.random.default_rng(20261203 + d)
    w = np.array([0.4, 0.1, 0.2, 0.3]) if labelled else np.array([0.5, 0.375, 0.125])
    k = w.shape[0]
    means = 2.0 * g.standard_normal((k, d))
    q, r = np.linalg.qr(g.standard_normal((k, d, d)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    lam = g.uniform(0.25, 1.5, (k, d))
    covs = np.einsum("kij,kj,klj->kil", q, lam, q)
    covs = 0.5 * (covs + np.swapaxes(covs, 1, 2))
    labels = np.array([0, 1, 0, 1]) if labelled else None
    return GaussianMixture(w, means, covs, labels=labels)


def tail_points(marginal: MarginalPath, t: float, n: int, g: np.random.Generator) -> np.ndarray:
    """n points at time t, each 10–50 (:data:`TAIL_SIGMAS`, cycled) standard deviations from
    every mode of p_t: distance spread + s·σ_max from the mean of p_t in a random direction,
    σ_max the largest standard deviation of any component of p_t."""
    data = marginal.data
    sv = marginal.schedule(np.array([float(t)]))
    a, b = float(sv.alpha[0]), float(sv.beta[0])
    centres = a * data.means
    sd = math.sqrt(a * a * float(np.max(data.eigenvalues)) + b * b)
    c = data.weights @ centres
    spread = float(np.max(np.linalg.norm(centres - c, axis=1)))
    s = np.resize(np.asarray(TAIL_SIGMAS), n)
    u = g.standard_normal((n, data.dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return c + (spread + s * sd)[:, None] * u


def _reweighted(data: GaussianMixture, k: int, h: float) -> GaussianMixture:
    w = data.weights.copy()
    w[k] *= math.exp(h)
    return GaussianMixture(w / w.sum(), data.means, data.covs, labels=data.labels)


def conditioning(
    marginal: MarginalPath,
    f: Callable[..., np.ndarray],
    arrays: Sequence[np.ndarray],
    time_index: int,
    x_index: int | None = 0,
) -> np.ndarray:
    """The condition estimate of ``f(marginal, *arrays)`` for the tolerance allowance.

    Σ_j |∂f/∂a_j|·|a_j| over the inputs (:func:`~fmref.testing._compare.sensitivity`), plus,
    when ``arrays[x_index]`` are points, Σ_k |∂f/∂log π_k|·|L_k| + |f|·Σ_k γ_k |L_k| with
    L_k = log π_k + log N_k(x) and γ_k the responsibilities: the error a standard algorithm
    makes by rounding each
    component's log-density (−½ r_kᵀS_k⁻¹r_k, ~1e3 at a tail point) and the terms of that size
    it combines (scores and fields of every component, differentiated by autograd); a relative
    perturbation of x does not show it. At exact samples Σ_k γ_k |L_k| is a few units and
    rtol dominates; at a point 50 σ out it is ~1250, so a float32 check there asks for ~1e-3
    relative and a float64 one still for ~1e-12.
    """
    total = sensitivity(lambda *a: f(marginal, *a), arrays, time_index)
    if x_index is None:
        return total
    data = marginal.data
    x, t = arrays[x_index], arrays[time_index]
    h = 2.0**-20
    shape = (-1,) + (1,) * (total.ndim - 1)
    biggest = np.zeros(x.shape[0])
    gamma = np.asarray(marginal.responsibilities(x, t), dtype=np.float64)
    for k in range(data.n_components):
        if data.weights[k] == 0:
            continue
        up = f(MarginalPath(_reweighted(data, k, h), marginal.path), *arrays)
        down = f(MarginalPath(_reweighted(data, k, -h), marginal.path), *arrays)
        single = GaussianMixture(np.ones(1), data.means[k : k + 1], data.covs[k : k + 1])
        joint = math.log(data.weights[k]) + np.asarray(
            MarginalPath(single, marginal.path).log_prob(x, t)
        )
        with np.errstate(invalid="ignore"):
            der = np.abs(np.asarray(up) - np.asarray(down)) / (2 * h) * np.abs(joint).reshape(shape)
        total = total + np.where(np.isfinite(der), der, 0.0)
        biggest = biggest + gamma[:, k] * np.where(np.isfinite(joint), np.abs(joint), 0.0)
    value = np.abs(np.asarray(f(marginal, *arrays), dtype=np.float64))
    return total + np.where(np.isfinite(value), value, 0.0) * biggest.reshape(shape)


def make_mixture(
    kind: str, g: np.random.Generator, *, labels: tuple[int, ...] | None = None
) -> GaussianMixture:
    """A well-conditioned random mixture of ``kind`` (eigenvalues in [0.2, 2], means in [−3, 3]).

    Weights are unequal by design (∝ 2^-i in a random order, so the largest is at least twice
    the next): a weight bug changes every field between the modes.
    """
    k, d = LABELLED_MIXTURE if labels is not None else SUITE_MIXTURES[kind]
    w = g.permutation(2.0 ** -np.arange(k))
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
    return GaussianMixture(w, means, covs, labels=None if labels is None else np.array(labels))


def _rows(
    marginal: MarginalPath, g: np.random.Generator, per_time: int, y_of: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """t, x, tail flag (and y) of a case: per time, per_time samples then the tail points."""
    data = marginal.data
    times = [t for t in SUITE_TIMES if not (data.kind == "dirac" and t == 1.0)]
    n_tail = max(1, per_time // 2)
    ts, xs, tails, ys = [], [], [], []
    for t in times:
        y = None if y_of is None else y_of(per_time + n_tail)
        x = marginal.sample(per_time, t, rng=g, y=None if y is None else y[:per_time])
        xs += [np.asarray(x), tail_points(marginal, t, n_tail, g)]
        ts.append(np.full(per_time + n_tail, t))
        tails.append(np.r_[np.zeros(per_time), np.ones(n_tail)])
        if y is not None:
            ys.append(y)
    return (
        np.concatenate(ts),
        np.concatenate(xs),
        np.concatenate(tails),
        np.concatenate(ys).astype(np.int64) if ys else None,
    )


def _marginal_outputs(marginal: MarginalPath, x: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    names = tuple(q for q in OUTPUTS if q in QUANTITY_INFO)
    r = marginal.evaluate(x, t, names)
    return {k: np.asarray(v, dtype=np.float64) for k, v in r.items()}


def _target(path: GaussianPath, z: np.ndarray, eps: np.ndarray, t: np.ndarray) -> np.ndarray:
    sv = path.schedule(t)
    finite = np.isfinite(np.asarray(sv.alpha_dot)) & np.isfinite(np.asarray(sv.beta_dot))
    target = np.full_like(z, np.nan)
    if finite.any():
        target[finite] = np.asarray(path.draw(z[finite], t[finite], eps=eps[finite]).target)
    return target


def _split_conditioning(
    mp: MarginalPath,
    f: Callable[[MarginalPath, np.ndarray, np.ndarray], dict[str, np.ndarray]],
    x: np.ndarray,
    t: np.ndarray,
) -> dict[str, np.ndarray]:
    """:func:`conditioning` of several outputs at once (one evaluation per perturbation)."""
    shapes = {q: np.shape(v) for q, v in f(mp, x, t).items()}
    n = x.shape[0]

    def flat(m: MarginalPath, xx: np.ndarray, tt: np.ndarray) -> np.ndarray:
        return np.concatenate([np.reshape(v, (n, -1)) for v in f(m, xx, tt).values()], axis=1)

    c = conditioning(mp, flat, (x, t), time_index=1, x_index=0)
    out, at = {}, 0
    for q, shp in shapes.items():
        width = int(np.prod(shp[1:], dtype=np.int64))
        out[q + COND_SUFFIX] = c[:, at : at + width].reshape(shp)
        at += width
    return out


def sensitivities(
    schedule: Schedule, data: GaussianMixture, inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``<output>_cond`` of an unlabelled case (:func:`conditioning` over x and t).

    The target's is over z, ε and t (it does not depend on the mixture).
    """
    mp = MarginalPath(data, GaussianPath(schedule))
    names = tuple(q for q in OUTPUTS if q in QUANTITY_INFO)

    def f(m: MarginalPath, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in m.evaluate(x, t, names).items()}

    out = _split_conditioning(mp, f, inputs["x"], inputs["t"])
    out["target" + COND_SUFFIX] = sensitivity(
        lambda z, e, t: _target(mp.path, z, e, t),
        (inputs["z"], inputs["eps"], inputs["t"]),
        time_index=2,
    )
    return out


def case_arrays(
    schedule: Schedule, data: GaussianMixture, g: np.random.Generator, per_time: int
) -> dict[str, np.ndarray]:
    """Inputs, exact outputs and their condition estimates of one case, float64, by time."""
    path = GaussianPath(schedule)
    mp = MarginalPath(data, path)
    t, x, tail, _ = _rows(mp, g, per_time)
    z = data.sample(t.shape[0], rng=g)
    eps = g.standard_normal(z.shape)
    sample = tail == 0
    x[sample] = np.asarray(path.draw(z[sample], t[sample], eps=eps[sample]).x)
    sv = schedule(t)
    out: dict[str, np.ndarray] = {"t": t, "z": z, "eps": eps, "x": x, "tail": tail}
    for name in ("alpha", "beta", "alpha_dot", "beta_dot"):
        out[name] = np.asarray(getattr(sv, name), dtype=np.float64)
    out.update(_marginal_outputs(mp, x, t))
    out["target"] = _target(path, z, eps, t)
    out.update(sensitivities(schedule, data, out))
    return out


def _labelled_outputs(
    mp: MarginalPath, x: np.ndarray, t: np.ndarray, y: np.ndarray, w: float
) -> dict[str, np.ndarray]:
    names = ("log_prob", "score", "vector_field", "classifier_log_prob", "classifier_score")
    r = mp.evaluate(x, t, names, y=y)
    out = {
        (f"{k}_given_y" if k in ("log_prob", "score", "vector_field") else k): np.asarray(v)
        for k, v in r.items()
    }
    out["cfg_vector_field"] = np.asarray(CFG(mp, y, w).vector_field(x, t))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def labelled_sensitivities(
    schedule: Schedule, data: GaussianMixture, inputs: Mapping[str, np.ndarray], w: float
) -> dict[str, np.ndarray]:
    """``<output>_cond`` of a labelled case (:func:`conditioning` over x and t, y fixed)."""
    mp = MarginalPath(data, GaussianPath(schedule))
    y = np.asarray(inputs["y"]).astype(np.int64)
    return _split_conditioning(
        mp, lambda m, x, t: _labelled_outputs(m, x, t, y, w), inputs["x"], inputs["t"]
    )


def labelled_case_arrays(
    schedule: Schedule, data: GaussianMixture, g: np.random.Generator, per_time: int, w: float
) -> dict[str, np.ndarray]:
    """Inputs, exact labelled outputs and condition estimates of one labelled case."""
    mp = MarginalPath(data, GaussianPath(schedule))
    classes = data.classes

    def y_of(m: int) -> np.ndarray:
        return classes[np.arange(m) % classes.shape[0]]

    t, x, tail, y = _rows(mp, g, per_time, y_of)
    assert y is not None  # y_of was given: internal invariant, not user input
    out: dict[str, np.ndarray] = {"t": t, "x": x, "y": y.astype(np.float64), "tail": tail}
    out.update(_labelled_outputs(mp, x, t, y, w))
    out.update(labelled_sensitivities(schedule, data, out, w))
    return out


def mixture_params(data: GaussianMixture) -> dict[str, Any]:
    """Mixture parameters as JSON-ready lists (floats round-trip exactly through repr)."""
    out = {
        "kind": data.kind,
        "weights": data.weights.tolist(),
        "means": data.means.tolist(),
        "covs": data.covs.tolist(),
    }
    if data.labels is not None:
        out["labels"] = data.labels.tolist()
    return out
