"""A 50-digit mpmath oracle for the exact marginal path (tests only).

It shares no code with fmref's kernel: dense mpmath matrices, LU solves and determinants on the
float64 parameters taken as exact, the textbook formulas of docs/theory.md written out
directly (the divergence as Σ_k γ_k [tr A_k + s_k·u_k] − s·u, which cancels in float64 but
not at 50 digits), and schedules from their defining formulas in mpmath.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np

DPS = 50

MpSched = Callable[[Any], tuple[Any, Any, Any, Any]]


def _linear(t: Any) -> tuple[Any, Any, Any, Any]:
    return t, 1 - t, mpmath.mpf(1), t - 1


def _cosine(t: Any) -> tuple[Any, Any, Any, Any]:
    h = mpmath.pi / 2
    a, b = mpmath.sin(h * t), mpmath.sin(h * (1 - t))
    return a, b, h * b, -h * a * b


def _sqrt_beta(t: Any) -> tuple[Any, Any, Any, Any]:
    return t, mpmath.sqrt(1 - t), mpmath.mpf(1), mpmath.mpf(-0.5)


def polynomial(p: float) -> MpSched:
    """α = t^p, β = 1 − t^p, α̇ = p t^(p−1), ββ̇ = −(1 − t^p) α̇."""

    def f(t: Any) -> tuple[Any, Any, Any, Any]:
        pp = mpmath.mpf(p)
        a = t**pp
        ad = pp * t ** (pp - 1) if t > 0 or pp >= 1 else mpmath.inf
        return a, 1 - a, ad, -(1 - a) * ad

    return f


SCHEDULES: dict[str, MpSched] = {"linear": _linear, "cosine": _cosine, "sqrt_beta": _sqrt_beta}


def marginal(
    weights: np.ndarray,
    means: np.ndarray,
    covs: np.ndarray,
    x: np.ndarray,
    t: float,
    sched: MpSched | tuple[float, float, float, float] = _linear,
) -> dict[str, np.ndarray]:
    """Every quantity at points ``x`` (n, d) and one time ``t``; covs dense (k, d, d).

    ``sched`` is an mpmath schedule, or the floats (α, β, α̇, ββ̇) taken as exact (to judge the
    kernel alone, given a schedule's rounded values).

    Returns float64 arrays rounded from 50-digit values (keys as in fmref.marginals.QUANTITIES;
    "jacobian" is included).
    """
    with mpmath.workdps(DPS):
        tt = mpmath.mpf(float(t))
        if callable(sched):
            a, b, ad, bbd = sched(tt)
        else:
            a, b, ad, bbd = (mpmath.mpf(float(v)) for v in sched)
        k, d = means.shape
        eye = mpmath.eye(d)
        comps = []
        for j in range(k):
            sig = mpmath.matrix(covs[j].tolist())
            s = a * a * sig + b * b * eye
            sdot_half = a * ad * sig + bbd * eye
            comps.append((sig, s, mpmath.inverse(s), sdot_half, mpmath.matrix(means[j].tolist())))
        out: dict[str, list[Any]] = {}
        for xi in x:
            xv = mpmath.matrix([mpmath.mpf(float(v)) for v in xi])
            joint, sk, uk, trak, ek, trck, dtk, ak, dtk_scale = ([] for _ in range(9))
            for j, (sig, s, s_inv, sdh, mu) in enumerate(comps):
                r = xv - a * mu
                sir = s_inv * r
                quad = (r.T * sir)[0]
                joint.append(
                    mpmath.log(weights[j])
                    - (quad + mpmath.log(mpmath.det(s)) + d * mpmath.log(2 * mpmath.pi)) / 2
                    if weights[j] > 0
                    else mpmath.mpf("-inf")
                )
                a_k = sdh * s_inv
                ak.append(a_k)
                sk.append(-sir)
                uk.append(ad * mu + a_k * r)
                trak.append(sum(a_k[i, i] for i in range(d)))
                ek.append(mu + a * sig * sir)
                c_k = sig - a * a * sig * s_inv * sig
                trck.append(sum(c_k[i, i] for i in range(d)))
                # ∂_t log N = ṁ·S⁻¹r + ½ rᵀS⁻¹ṠS⁻¹r − ½ tr(S⁻¹Ṡ), Ṡ = 2·sdh
                terms = (
                    ad * (mu.T * sir)[0],
                    (sir.T * sdh * sir)[0],
                    -sum((s_inv * sdh)[i, i] for i in range(d)),
                )
                dtk.append(sum(terms))
                dtk_scale.append(sum(abs(v) for v in terms))
            lse = max(joint) + mpmath.log(sum(mpmath.exp(jj - max(joint)) for jj in joint))
            g = [mpmath.exp(jj - lse) for jj in joint]
            s_ = sum((g[j] * sk[j] for j in range(k)), mpmath.zeros(d, 1))
            u_ = sum((g[j] * uk[j] for j in range(k)), mpmath.zeros(d, 1))
            e_ = sum((g[j] * ek[j] for j in range(k)), mpmath.zeros(d, 1))
            jac = sum((g[j] * (ak[j] + uk[j] * sk[j].T) for j in range(k)), mpmath.zeros(d, d))
            jac = jac - u_ * s_.T
            div = sum(g[j] * (trak[j] + (sk[j].T * uk[j])[0]) for j in range(k)) - (s_.T * u_)[0]
            between = sum(g[j] * mpmath.norm(ek[j] - e_) ** 2 for j in range(k))
            vals = {
                "log_prob": lse,
                "score": list(s_),
                "vector_field": list(u_),
                "divergence": div,
                "jacobian": [[jac[i, m] for m in range(d)] for i in range(d)],
                "dlog_prob_dt": sum(g[j] * dtk[j] for j in range(k)),
                # Σ_k γ_k Σ |terms|: the size of what ∂_t log p sums, its condition scale
                "dlog_prob_dt_scale": sum(g[j] * dtk_scale[j] for j in range(k)),
                "divergence_scale": sum(
                    g[j] * (abs(trak[j]) + abs(((sk[j] - s_).T * (uk[j] - u_))[0]))
                    for j in range(k)
                ),
                "responsibilities": g,
                "posterior_mean": list(e_),
                "posterior_cov_trace": sum(g[j] * trck[j] for j in range(k)) + between,
            }
            if b > 0:
                vals["noise_posterior_mean"] = list((xv - a * e_) / b)
            for key, v in vals.items():
                out.setdefault(key, []).append(v)
        return {key: _to_float(v) for key, v in out.items()}


def _to_float(v: Any) -> np.ndarray:
    if isinstance(v, list):
        return np.array([_to_float(e) for e in v], dtype=np.float64)
    return np.float64(float(v))  # type: ignore[no-any-return]
