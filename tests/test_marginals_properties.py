"""Property tests of MarginalPath over random mixtures, schedules and times (float64).

Mixtures: isotropic, diagonal and full covariances, k ≤ 8 components, d ≤ 8 dimensions,
eigenvalues in [0.2, 2]. Schedules: Linear, Cosine, Polynomial(2, 3), LinearVP, VP, SqrtBeta.
Every expected value comes from an independent route (scipy densities, importance sampling,
finite differences, identities), never from fmref's own formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cases import PROPERTY, SCHEDULES, Case, cases, schedule_names, times, with_endpoints
from _reference import (
    ab,
    fd_dt,
    fd_grad,
    fd_jac,
    min_std,
    posterior_is,
    ref_log_prob,
    ref_responsibilities,
)
from hypothesis import given
from hypothesis import strategies as st

from fmref import conversions
from fmref.marginals import MarginalPath

# Every property here runs hypothesis over each backend against brute-force references.
pytestmark = pytest.mark.slow

#: Monte-Carlo agreement bound, in standard errors (per coordinate, per point).
N_SE = 5.0
#: Importance-sampling draws per point.
N_IS = 20_000


def _points(case: Case, alpha: float, beta: float, n: int, seed: int) -> np.ndarray:
    """Points of p_t drawn by the test itself: x = α z + β ε."""
    g = np.random.default_rng(seed)
    z = case.gm.sample(n, rng=g)
    return alpha * z + beta * g.standard_normal(z.shape)


def _tol(ref: np.ndarray, rel: float) -> float:
    return rel * (1.0 + float(np.abs(ref).max()))


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(), seed=st.integers(0, 2**16))
@with_endpoints(0.0, 1.0)
def test_log_prob_and_responsibilities_vs_scipy(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    x = _points(case, a, b, 5, seed)
    bx = backend.asarray(x)
    lp = backend.to_numpy(mp.log_prob(bx, t))
    np.testing.assert_allclose(lp, ref_log_prob(case, x, a, b), rtol=1e-10, atol=1e-10)
    gamma = backend.to_numpy(mp.responsibilities(bx, t))
    np.testing.assert_allclose(gamma, ref_responsibilities(case, x, a, b), rtol=1e-8, atol=1e-12)


_IS_CACHE: dict[tuple[Any, ...], dict[str, tuple[np.ndarray, np.ndarray]]] = {}


def _is_reference(
    case: Case, name: str, t: float, x: np.ndarray, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """IS estimates (value, standard error) per quantity for the points x, shared by backends."""
    key = (case.weights.tobytes(), case.means.tobytes(), case.covs.tobytes(), name, t, x.tobytes())
    if key in _IS_CACHE:
        return _IS_CACHE[key]
    sv = SCHEDULES[name](np.float64(t))
    a, b, ad, bd = float(sv.alpha), float(sv.beta), float(sv.alpha_dot), float(sv.beta_dot)
    rng = np.random.default_rng(seed + 1)
    per_point = []
    for xi in x:
        post = posterior_is(case, xi, a, b, N_IS, rng)
        assert post.ess > 50, "the IS reference itself is too degenerate to judge"
        z = post.z
        # The conditional vector field written out: u_t(x|z) = α̇ z + (β̇/β)(x − α z).
        checks = {
            "vector_field": post.mean(ad * z + (bd / b) * (xi - a * z)),
            "posterior_mean": post.mean(z),
            "noise_posterior_mean": post.mean((xi - a * z) / b),
        }
        ez = checks["posterior_mean"][0]
        # tr Cov = E||z − E z||²: its influence function is ||z − E z||² − tr Cov.
        checks["posterior_cov_trace"] = post.mean(np.sum((z - ez) ** 2, axis=1))
        per_point.append(checks)
    out = {
        k: (np.stack([p[k][0] for p in per_point]), np.stack([p[k][1] for p in per_point]))
        for k in per_point[0]
    }
    _IS_CACHE[key] = out
    return out


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(0.0, 0.9), seed=st.integers(0, 2**16))
@with_endpoints(0.0, 0.9)
def test_posterior_vs_importance_sampling(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    """u_t(x) = E[u_t(x|z) | x], E[z|x], E[ε|x], tr Cov(z|x) against self-normalised IS."""
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    x = _points(case, a, b, 2, seed)
    out = mp.evaluate(
        backend.asarray(x),
        t,
        ("vector_field", "posterior_mean", "noise_posterior_mean", "posterior_cov_trace"),
    )
    for key, (est, se) in _is_reference(case, name, t, x, seed).items():
        err = np.abs(backend.to_numpy(out[key]) - est)
        bound = N_SE * se + 1e-9 * (1 + np.abs(est).max())
        assert np.all(err <= bound), f"{key}: |error| {err} > {N_SE} SE = {bound}"


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(), seed=st.integers(0, 2**16))
@with_endpoints(0.0, 1.0)
def test_spatial_derivatives_vs_finite_differences(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    """score = ∇ log p_t, jacobian = ∇u_t, divergence = tr ∇u_t, by O(h⁴) central differences."""
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    x = _points(case, a, b, 3, seed)
    bx = backend.asarray(x)
    out = {
        k: backend.to_numpy(v)
        for k, v in mp.evaluate(bx, t, ("score", "vector_field", "jacobian", "divergence")).items()
    }
    # Step 1e-3 of the narrowest component's standard deviation: truncation (h/σ)⁴ ≈ 1e-12,
    # rounding ε|f|/h ≈ 1e-11 relative.
    h = 1e-3 * min_std(case, a, b)

    def logp(xs: np.ndarray) -> np.ndarray:
        return backend.to_numpy(mp.log_prob(backend.asarray(xs), t))

    def field(xs: np.ndarray) -> np.ndarray:
        return backend.to_numpy(mp.vector_field(backend.asarray(xs), t))

    fd_score = fd_grad(logp, x, h)
    np.testing.assert_allclose(out["score"], fd_score, rtol=1e-6, atol=_tol(fd_score, 1e-6))
    fd_j = fd_jac(field, x, h)
    np.testing.assert_allclose(out["jacobian"], fd_j, rtol=1e-6, atol=_tol(fd_j, 1e-6))
    fd_div = np.trace(fd_j, axis1=1, axis2=2)
    np.testing.assert_allclose(out["divergence"], fd_div, rtol=1e-6, atol=_tol(fd_j, 1e-6))
    if a > 1e-3 and b > 0:  # β²/α multiplies the differencing error
        # Second-order Tweedie: ∇_x E[z|x] = (α/β²) Cov(z|x), so tr Cov = (β²/α) div E[z|x].
        tr_cov = backend.to_numpy(mp.posterior_cov_trace(bx, t))

        def x_hat(xs: np.ndarray) -> np.ndarray:
            return backend.to_numpy(mp.posterior_mean(backend.asarray(xs), t))

        want = (b * b / a) * np.trace(fd_jac(x_hat, x, h), axis1=1, axis2=2)
        np.testing.assert_allclose(tr_cov, want, rtol=1e-5, atol=_tol(want, 1e-6))


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(0.01, 0.99), seed=st.integers(0, 2**16))
@with_endpoints(0.01, 0.99)
def test_dlog_prob_dt_vs_finite_differences(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    bx = backend.asarray(_points(case, a, b, 4, seed))
    got = backend.to_numpy(mp.dlog_prob_dt(bx, t))
    want = fd_dt(lambda s: backend.to_numpy(mp.log_prob(bx, s)), t, 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=_tol(want, 1e-6))


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(0.05, 1.0), seed=st.integers(0, 2**16))
@with_endpoints(0.05, 1.0)
def test_score_velocity_identity(backend: Any, case: Case, name: str, t: float, seed: int) -> None:
    """For α > 0: u = (α̇/α) x + (α̇β²/α − ββ̇) s (docs/theory.md §6), including t = 1."""
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, ad, bbd = ab(SCHEDULES[name], t)
    x = _points(case, a, b, 5, seed)
    out = mp.evaluate(backend.asarray(x), t, ("score", "vector_field"))
    s, u = backend.to_numpy(out["score"]), backend.to_numpy(out["vector_field"])
    want = (ad / a) * x + (ad * b * b / a - bbd) * s
    np.testing.assert_allclose(u, want, rtol=1e-9, atol=_tol(want, 1e-9))


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(0.05, 0.95), seed=st.integers(0, 2**16))
@with_endpoints(0.05, 0.95)
def test_conversion_round_trips(backend: Any, case: Case, name: str, t: float, seed: int) -> None:
    """x = α x̂ + β ε̂, and every fmref.conversions route between x̂, ε̂, s and u agrees."""
    sched = SCHEDULES[name]
    mp = MarginalPath(case.gm, sched)
    a, b, _, _ = ab(sched, t)
    x = _points(case, a, b, 5, seed)
    bx = backend.asarray(x)
    out = mp.evaluate(bx, t, ("posterior_mean", "noise_posterior_mean", "score", "vector_field"))
    xh, eh, s, u = (
        out[k] for k in ("posterior_mean", "noise_posterior_mean", "score", "vector_field")
    )
    npy = {k: backend.to_numpy(v) for k, v in out.items()}
    np.testing.assert_allclose(
        a * npy["posterior_mean"] + b * npy["noise_posterior_mean"],
        x,
        rtol=1e-10,
        atol=_tol(x, 1e-10),
    )
    routes = {
        "noise_posterior_mean": [
            conversions.eps_hat_from_x_hat(sched, bx, t, xh),
            conversions.eps_hat_from_score(sched, bx, t, s),
        ],
        "posterior_mean": [
            conversions.x_hat_from_eps_hat(sched, bx, t, eh),
            conversions.x_hat_from_velocity(sched, bx, t, u),
        ],
        "score": [
            conversions.score_from_eps_hat(sched, bx, t, eh),
            conversions.score_from_velocity(sched, bx, t, u),
        ],
        "vector_field": [
            conversions.velocity_from_x_hat(sched, bx, t, xh),
            conversions.velocity_from_score(sched, bx, t, s),
        ],
    }
    # 1/α and 1/(α̇β − αβ̇) amplify rounding by up to ~1/α ≈ 150 (VP at t = 0.05).
    for key, gots in routes.items():
        for g in gots:
            np.testing.assert_allclose(
                backend.to_numpy(g), npy[key], rtol=1e-8, atol=_tol(npy[key], 1e-8) + _tol(x, 1e-8)
            )


@PROPERTY
@given(case=cases(max_d=5), name=schedule_names(), t=times(), seed=st.integers(0, 2**16))
@with_endpoints(0.0, 1.0)
def test_sample_vs_log_prob_and_moments(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    """sample(n, t): moments α E[z], α² Cov[z] + β² I, and mean log-likelihood E[log p_t(X_t)]."""
    sched = SCHEDULES[name]
    mp = MarginalPath(case.gm, sched)
    a, b, _, _ = ab(sched, t)
    n = 4000
    like = backend.asarray(np.zeros((1, case.d)))
    xs = mp.sample(n, t, rng=seed, like=like)
    assert xs.dtype == like.dtype
    x = backend.to_numpy(xs)
    assert x.shape == (n, case.d)
    # Moments within N_SE standard errors of the test's own formula.
    w, mu, cov = case.weights, case.means, case.covs
    m = a * (w @ mu)
    c = a * a * (np.einsum("k,kij->ij", w, cov) + np.einsum("k,ki,kj->ij", w, mu, mu)) - np.outer(
        m, m
    )
    c += b * b * np.eye(case.d)
    assert np.all(np.abs(x.mean(0) - m) <= N_SE * np.sqrt(np.diag(c) / n) + 1e-12)
    dev = x - m
    prod = dev[:, :, None] * dev[:, None, :]
    assert np.all(np.abs(prod.mean(0) - c) <= N_SE * prod.std(0) / np.sqrt(n) + 1e-12)
    # Mean log-likelihood of fmref's samples vs an independent sample scored by scipy.
    lp = backend.to_numpy(mp.log_prob(xs, t))
    np.testing.assert_allclose(lp, ref_log_prob(case, x, a, b), rtol=1e-10, atol=1e-10)
    ref = ref_log_prob(case, _points(case, a, b, n, seed + 7), a, b)
    se = np.sqrt(lp.var() / n + ref.var() / n)
    assert abs(lp.mean() - ref.mean()) <= N_SE * se
