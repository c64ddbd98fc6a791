"""MarginalPath on cases with textbook answers: one Gaussian, Dirac data, the endpoints.

Property tests over random mixtures live in test_marginals_properties.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cases import SCHEDULES, make_case
from _reference import ab, ref_log_prob
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref.marginals import (
    QUANTITIES,
    QUANTITIES_GIVEN_Y,
    QUANTITY_ALIASES,
    QUANTITY_INFO,
    MarginalPath,
)
from fmref.mixtures import GaussianMixture
from fmref.schedules import Linear

MU = np.array([1.0, -2.0, 0.5])
SIGMA = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
X = np.random.default_rng(0).normal(size=(5, 3)) * 1.5
NAMES = list(SCHEDULES)


def _eval(mp: MarginalPath, backend: Any, x: np.ndarray, t: Any) -> dict[str, np.ndarray]:
    out = mp.evaluate(backend.asarray(x), t, QUANTITIES)
    return {k: backend.to_numpy(v) for k, v in out.items()}


# -- a single Gaussian N(μ, Σ): everything is textbook -------------------------------------
def _gaussian_textbook(name: str, t: float, x: np.ndarray) -> dict[str, np.ndarray]:
    """p_t = N(αμ, S), S = α²Σ + β²I, written out with dense linear algebra.

    The field is affine, u(x) = α̇μ + ½ Ṡ S⁻¹ (x − αμ), Ṡ = 2αα̇Σ + 2ββ̇I (it transports
    N(αμ, S_t) because S_t and Ṡ_t commute). The posterior of z uses the information form
    Cov(z|x) = (Σ⁻¹ + (α²/β²) I)⁻¹, E[z|x] = Cov(z|x)(Σ⁻¹μ + αx/β²): Bayes for a Gaussian
    prior and likelihood N(x; αz, β²I), a different route from the code's gain form.
    """
    a, b, ad, bbd = ab(SCHEDULES[name], t)
    d = len(MU)
    s_mat = a * a * SIGMA + b * b * np.eye(d)
    s_dot = 2 * a * ad * SIGMA + 2 * bbd * np.eye(d)
    r = x - a * MU
    s_inv_r = np.linalg.solve(s_mat, r.T).T
    gain = 0.5 * s_dot @ np.linalg.inv(s_mat)
    out = {
        "log_prob": multivariate_normal(a * MU, s_mat).logpdf(x),
        "score": -s_inv_r,
        "vector_field": ad * MU + r @ gain.T,
        "jacobian": np.broadcast_to(gain, (len(x), d, d)),
        "divergence": np.full(len(x), np.trace(gain)),
        # ∂_t log N(x; m, S) = ṁᵀS⁻¹r + ½ rᵀS⁻¹ṠS⁻¹r − ½ tr(S⁻¹Ṡ) (matrix calculus).
        "dlog_prob_dt": ad * s_inv_r @ MU
        + 0.5 * np.einsum("ni,ij,nj->n", s_inv_r, s_dot, s_inv_r)
        - 0.5 * np.trace(np.linalg.solve(s_mat, s_dot)),
        "responsibilities": np.ones((len(x), 1)),
    }
    if b > 0:
        cov = np.linalg.inv(np.linalg.inv(SIGMA) + (a * a / (b * b)) * np.eye(d))
        ez = (cov @ (np.linalg.solve(SIGMA, MU)[:, None] + (a / b**2) * x.T)).T
        out["posterior_mean"] = ez
        out["noise_posterior_mean"] = (x - a * ez) / b
        out["posterior_cov_trace"] = np.full(len(x), np.trace(cov))
    else:  # t = 1: X_1 = z exactly and ε is independent of it
        out["posterior_mean"] = x
        out["noise_posterior_mean"] = np.zeros_like(x)
        out["posterior_cov_trace"] = np.zeros(len(x))
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_single_gaussian_textbook(backend: Any, name: str, t: float) -> None:
    mp = MarginalPath(GaussianMixture.gaussian(MU, SIGMA), SCHEDULES[name])
    got = _eval(mp, backend, X, t)
    want = _gaussian_textbook(name, t, X)
    for key in QUANTITIES:
        np.testing.assert_allclose(
            got[key], want[key], rtol=1e-10, atol=1e-11 * (1 + np.abs(want[key]).max()), err_msg=key
        )


@pytest.mark.parametrize("name", ["linear", "cosine", "vp", "sqrt_beta"])
def test_single_gaussian_closed_form_flow_solves_the_ode(backend: Any, name: str) -> None:
    """X_t = α_t μ + S_t^{1/2} S_{t0}^{-1/2} (X_{t0} − α_{t0} μ) has dX/dt = u_t(X_t)."""
    sched = SCHEDULES[name]
    mp = MarginalPath(GaussianMixture.gaussian(MU, SIGMA), sched)
    lam, q = np.linalg.eigh(SIGMA)

    def sqrt_s(t: float, power: float) -> np.ndarray:
        a, b, _, _ = ab(sched, t)
        return (q * (a * a * lam + b * b) ** power) @ q.T

    t0 = 0.2
    x0 = X

    def x_at(t: float) -> np.ndarray:
        a0, _, _, _ = ab(sched, t0)
        a, _, _, _ = ab(sched, t)
        return a * MU + (x0 - a0 * MU) @ (sqrt_s(t, 0.5) @ sqrt_s(t0, -0.5)).T

    for t in (0.3, 0.6, 0.9):
        h = 1e-4
        dxdt = (x_at(t + h) - x_at(t - h)) / (2 * h)
        got = backend.to_numpy(mp.vector_field(backend.asarray(x_at(t)), t))
        np.testing.assert_allclose(got, dxdt, rtol=1e-6, atol=1e-6)


# -- Dirac (empirical) data: the posterior is a finite enumeration --------------------------
PTS = np.array([[0.0, 1.0], [2.0, -1.0], [3.0, 3.0], [-1.0, 0.5], [0.5, 0.5]])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [0.0, 0.4, 0.9])
def test_empirical_data_by_enumeration(backend: Any, name: str, t: float) -> None:
    sched = SCHEDULES[name]
    mp = MarginalPath(GaussianMixture.empirical(PTS), sched)
    sv = sched(np.float64(t))
    a, b = float(sv.alpha), float(sv.beta)
    ad, bd = float(sv.alpha_dot), float(sv.beta_dot)
    x = np.random.default_rng(1).normal(size=(6, 2)) + 1.0
    got = _eval(mp, backend, x, t)
    # log N(x; α z_i, β² I) for every pair (point, data point): shape (n, N).
    log_n = np.stack([multivariate_normal(a * z, b * b * np.eye(2)).logpdf(x) for z in PTS], 1)
    log_p = logsumexp(log_n, axis=1) - np.log(len(PTS))
    w = np.exp(log_n - logsumexp(log_n, axis=1, keepdims=True))
    u_cond = ad * PTS[None] + (bd / b) * (x[:, None, :] - a * PTS[None])  # (n, N, d)
    ez = w @ PTS
    want = {
        "log_prob": log_p,
        "responsibilities": w,
        "score": np.einsum("ni,nid->nd", w, -(x[:, None, :] - a * PTS[None]) / b**2),
        "vector_field": np.einsum("ni,nid->nd", w, u_cond),
        "posterior_mean": ez,
        "noise_posterior_mean": (x - a * ez) / b,
        "posterior_cov_trace": w @ np.sum(PTS**2, axis=1) - np.sum(ez**2, axis=1),
    }
    for key, value in want.items():
        np.testing.assert_allclose(
            got[key], value, rtol=1e-10, atol=1e-11 * (1 + np.abs(value).max()), err_msg=key
        )


@pytest.mark.parametrize("name", NAMES)
def test_empirical_data_refused_at_one(backend: Any, name: str) -> None:
    mp = MarginalPath(GaussianMixture.empirical(PTS), SCHEDULES[name])
    for q in QUANTITIES:
        with pytest.raises(ValueError, match=r"\bt\b"):
            mp.evaluate(backend.asarray(PTS), 1.0, (q,))
    with pytest.raises(ValueError, match=r"\bt\b"):
        mp.log_prob(backend.asarray(PTS), backend.asarray(np.array([0.5, 0.5, 0.5, 0.5, 1.0])))


def test_degenerate_covariance(backend: Any) -> None:
    """A rank-1 Σ in 2-D: p_t has a density for t < 1 (S = α²Σ + β²I is positive definite)."""
    sigma = np.array([[1.0, 1.0], [1.0, 1.0]])
    gm = GaussianMixture([0.3, 0.7], [[0.0, 1.0], [2.0, -1.0]], np.stack([sigma, np.eye(2)]))
    mp = MarginalPath(gm, SCHEDULES["linear"])
    x = X[:, :2]
    for t in (0.0, 0.5, 0.9):
        s0, s1 = t * t * sigma + (1 - t) ** 2 * np.eye(2), (t * t + (1 - t) ** 2) * np.eye(2)
        want = logsumexp(
            np.stack(
                [
                    np.log(0.3) + multivariate_normal(t * np.array([0.0, 1.0]), s0).logpdf(x),
                    np.log(0.7) + multivariate_normal(t * np.array([2.0, -1.0]), s1).logpdf(x),
                ],
                axis=1,
            ),
            axis=1,
        )
        got = backend.to_numpy(mp.log_prob(backend.asarray(x), t))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"\bt\b"):
        mp.log_prob(backend.asarray(x), 1.0)


# -- endpoints for positive-definite mixtures ---------------------------------------------
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "vp"])  # VP has α_0 > 0
def test_t0_is_noise(backend: Any, kind: str, name: str) -> None:
    case = make_case(3, 4, 3, kind)
    mp = MarginalPath(case.gm, SCHEDULES[name])
    _, _, ad, _ = ab(SCHEDULES[name], 0.0)
    bd = float(SCHEDULES[name](np.float64(0.0)).beta_dot)
    got = _eval(mp, backend, X, 0.0)
    mean_z = case.weights @ case.means
    cov_z = case.gm.covariance()
    np.testing.assert_allclose(
        got["log_prob"], multivariate_normal(np.zeros(3)).logpdf(X), rtol=1e-13, atol=1e-13
    )
    np.testing.assert_allclose(got["score"], -X, rtol=1e-13, atol=1e-13)
    # At α = 0, X_0 = ε: the posterior of z is the prior and E[ε|x] = x.
    np.testing.assert_allclose(
        got["posterior_mean"], np.broadcast_to(mean_z, X.shape), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(got["noise_posterior_mean"], X, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got["posterior_cov_trace"], np.trace(cov_z), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got["vector_field"], ad * mean_z + bd * X, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        got["responsibilities"], np.broadcast_to(case.weights, (5, 4)), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("name", NAMES)
def test_t1_is_data(backend: Any, kind: str, name: str) -> None:
    case = make_case(4, 4, 3, kind)
    mp = MarginalPath(case.gm, SCHEDULES[name])
    got = _eval(mp, backend, X, 1.0)
    np.testing.assert_allclose(
        got["log_prob"], ref_log_prob(case, X, 1.0, 0.0), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(got["score"], case.gm.score(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["posterior_mean"], X, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got["noise_posterior_mean"], 0.0, rtol=0, atol=1e-13)
    np.testing.assert_allclose(got["posterior_cov_trace"], 0.0, rtol=0, atol=1e-12)
    for key in QUANTITIES:
        assert np.all(np.isfinite(got[key])), key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_dlog_prob_dt_one_sided_at_endpoints(backend: Any, name: str, t: float) -> None:
    case = make_case(5, 3, 2, "full")
    mp = MarginalPath(case.gm, SCHEDULES[name])
    x = X[:, :2]
    bx = backend.asarray(x)
    h = 1e-5 if t == 0.0 else -1e-5
    f = [backend.to_numpy(mp.log_prob(bx, t + j * h)) for j in range(3)]
    one_sided = (-3 * f[0] + 4 * f[1] - f[2]) / (2 * h)  # second order, error O(h²)
    got = backend.to_numpy(mp.dlog_prob_dt(bx, t))
    np.testing.assert_allclose(got, one_sided, rtol=1e-5, atol=1e-5 * (1 + np.abs(got).max()))


# -- per-row times, batching, chunking, empty batches ---------------------------------------
def test_per_row_times_match_scalar_calls(backend: Any) -> None:
    case = make_case(6, 3, 3, "full")
    mp = MarginalPath(case.gm, SCHEDULES["cosine"])
    ts = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    rows = _eval(mp, backend, X, backend.asarray(ts))
    for i, t in enumerate(ts):
        one = _eval(mp, backend, X[i : i + 1], float(t))
        for key in QUANTITIES:
            np.testing.assert_allclose(
                rows[key][i], one[key][0], rtol=1e-13, atol=1e-14, err_msg=key
            )


def test_evaluate_equals_single_methods_and_chunking(backend: Any) -> None:
    case = make_case(7, 5, 3, "full")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    tiny = MarginalPath(case.gm, SCHEDULES["linear"], memory_budget=2048)  # one row per chunk
    x = backend.asarray(np.random.default_rng(2).normal(size=(9, 3)))
    together = mp.evaluate(x, 0.6, QUANTITIES)
    chunked = tiny.evaluate(x, 0.6, QUANTITIES)
    methods = {
        "log_prob": mp.log_prob,
        "score": mp.score,
        "vector_field": mp.vector_field,
        "divergence": mp.divergence,
        "jacobian": mp.jacobian,
        "dlog_prob_dt": mp.dlog_prob_dt,
        "responsibilities": mp.responsibilities,
        "posterior_mean": mp.posterior_mean,
        "noise_posterior_mean": mp.noise_posterior_mean,
        "posterior_cov_trace": mp.posterior_cov_trace,
    }
    for key, method in methods.items():
        want = backend.to_numpy(together[key])
        np.testing.assert_allclose(backend.to_numpy(method(x, 0.6)), want, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(backend.to_numpy(chunked[key]), want, rtol=1e-13, atol=1e-14)


def test_empty_batch(backend: Any) -> None:
    mp = MarginalPath(make_case(8, 2, 3, "full").gm, SCHEDULES["linear"])
    out = mp.evaluate(backend.asarray(np.zeros((0, 3))), 0.5, QUANTITIES)
    assert tuple(out["log_prob"].shape) == (0,)
    assert tuple(out["jacobian"].shape) == (0, 3, 3)
    assert tuple(out["responsibilities"].shape) == (0, 2)


# -- float32 -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("t", [0.0, 0.5, 0.9, 1.0])
def test_float32_close_to_float64(backend32: Any, kind: str, t: float) -> None:
    case = make_case(9, 4, 3, kind)
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    got = mp.evaluate(backend32.asarray(X), t, QUANTITIES)
    want = mp.evaluate(X, t, QUANTITIES)
    for key in QUANTITIES:
        assert got[key].dtype == backend32.dtype, key
        g, w = backend32.to_numpy(got[key]), want[key]
        # float32 rounding (6e-8) amplified by S⁻¹ (eigenvalues ≥ 0.2) and cancellations.
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * (1 + np.abs(w).max()), err_msg=key)
    lp = backend32.to_numpy(got["log_prob"])
    a, b, _, _ = ab(SCHEDULES["linear"], t)
    np.testing.assert_allclose(lp, ref_log_prob(case, X, a, b), rtol=1e-5, atol=1e-4)


def test_rank_deficient_full_covariance_is_singular_at_t1() -> None:
    # Σ = v vᵀ has eigenvalues (0, 0, 6); eigh returns ~1e-17 for the zeros, which must still
    # count as singular: p_1 has no density, so t = 1 is refused rather than returning -4e10.
    v = np.array([1.0, 2.0, -1.0])
    gm = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], np.outer(v, v)[None])
    lam = np.sort(gm.eigenvalues[0])
    np.testing.assert_array_equal(lam[:2], [0.0, 0.0])
    np.testing.assert_allclose(lam[2], 6.0, rtol=1e-12, atol=0.0)
    mp = MarginalPath(gm, Linear())
    with pytest.raises(ValueError, match=r"\bt\b"):
        mp.log_prob(np.zeros((1, 3)), 1.0)
    assert np.isfinite(mp.log_prob(np.zeros((1, 3)), 0.99)).all()


def test_posterior_cov_trace_keeps_accuracy_near_t1_far_from_origin() -> None:
    # Two components at ±100: near t = 1 the posterior is the component's own Gaussian
    # conditioning, tr Cov(z|x) = d / (1/σ² + α²/β²), which is ~1e-12 while ||e_k||² ~ 1e4.
    gm = GaussianMixture([0.5, 0.5], [[100.0, 0.0], [-100.0, 0.0]], [1.0, 1.0])
    mp = MarginalPath(gm, Linear())
    t = 0.999999
    x = mp.sample(5, t, rng=np.random.default_rng(0))
    expected = 2.0 / (1.0 + t * t / (1.0 - t) ** 2)
    np.testing.assert_allclose(mp.posterior_cov_trace(x, t), expected, rtol=1e-6, atol=0.0)


def test_constant_time_array_equals_scalar_time_and_string_quantity() -> None:
    gm = GaussianMixture([0.3, 0.7], [[1.0, 0.0], [-1.0, 2.0]], [0.5, 1.5])
    mp = MarginalPath(gm, Linear())
    x = mp.sample(50, 0.4, rng=np.random.default_rng(0))
    scalar = mp.evaluate(x, 0.4, QUANTITIES)
    array = mp.evaluate(x, np.full(50, 0.4), QUANTITIES)
    for q in QUANTITIES:
        np.testing.assert_allclose(array[q], scalar[q], rtol=1e-12, atol=1e-12, err_msg=q)
    np.testing.assert_array_equal(mp.evaluate(x, 0.4, "score")["score"], scalar["score"])


# -- the one list of quantities ------------------------------------------------------------
def test_quantity_records_name_methods_and_shapes() -> None:
    # k = 2, d = 3 so that every axis symbol maps to a distinct size.
    gm = make_case(12, 2, 3, "full").gm
    labelled = GaussianMixture(gm.weights, gm.means, gm.covs, labels=[0, 1])
    mp = MarginalPath(labelled, SCHEDULES["cosine"])
    x = np.random.default_rng(3).normal(size=(7, 3))
    out = mp.evaluate(x, 0.4, tuple(QUANTITY_INFO), y=1)
    assert list(out) == list(QUANTITY_INFO)
    for name, q in QUANTITY_INFO.items():
        assert q.name == name
        assert out[name].shape == q.dims(7, 3, 2), name
        method = getattr(mp, name)  # the record's name is the MarginalPath method
        np.testing.assert_array_equal(method(x, 0.4, y=1), out[name], err_msg=name)
        if q.given_y:
            with pytest.raises(ValueError, match="need y="):
                mp.evaluate(x, 0.4, (name,))
    shapes = {q: QUANTITY_INFO[q].shape for q in ("log_prob", "score", "jacobian")}
    assert shapes == {"log_prob": "(n,)", "score": "(n, d)", "jacobian": "(n, d, d)"}
    assert QUANTITY_INFO["responsibilities"].shape == "(n, k)"
    assert isinstance(QUANTITIES, tuple)
    plain = tuple(n for n, q in QUANTITY_INFO.items() if not (q.before_one or q.given_y))
    assert plain == QUANTITIES
    assert {n for n, q in QUANTITY_INFO.items() if q.given_y} == set(QUANTITIES_GIVEN_Y)
    assert {n for n, q in QUANTITY_INFO.items() if q.before_one} == {"cfm_floor_integrand"}


def test_before_one_and_rates_come_from_the_records() -> None:
    from fmref.schedules import Polynomial

    gm = make_case(13, 2, 2, "isotropic").gm
    gm = GaussianMixture(gm.weights, gm.means, gm.covs, labels=[0, 1])
    mp = MarginalPath(gm, SCHEDULES["linear"])
    x = np.zeros((2, 2))
    for name, q in QUANTITY_INFO.items():
        if q.before_one:
            with pytest.raises(ValueError, match=rf"t: {name} needs β_t > 0"):
                mp.evaluate(x, 1.0, (name,), y=0)
        else:
            assert np.all(np.isfinite(mp.evaluate(x, 1.0, (name,), y=0)[name])), name
    steep = MarginalPath(mp.data, Polynomial(0.5))  # α̇ infinite at t = 0
    for name, q in QUANTITY_INFO.items():
        if q.needs_rates:
            with pytest.raises(ValueError, match=r"\bt\b"):
                steep.evaluate(x, 0.0, (name,), y=0)
        elif not q.before_one:
            assert np.all(np.isfinite(steep.evaluate(x, 0.0, (name,), y=0)[name])), name


def test_01_names_are_deprecated_aliases() -> None:
    mp = MarginalPath(make_case(14, 2, 2, "diagonal").gm, SCHEDULES["linear"])
    x = np.random.default_rng(4).normal(size=(5, 2))
    for old, new in QUANTITY_ALIASES.items():
        with pytest.warns(DeprecationWarning, match=rf"'{old}' → '{new}'"):
            got = mp.evaluate(x, 0.5, (old, "score"))
        assert set(got) == {old, "score"}
        np.testing.assert_array_equal(got[old], getattr(mp, new)(x, 0.5))
    with pytest.raises(ValueError, match="quantities"):
        mp.evaluate(x, 0.5, ("posterior_mean_z",))
    with pytest.raises(ValueError, match="quantities"):
        mp.evaluate(x, 0.5, ())
