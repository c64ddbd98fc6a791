"""Ground truth at the extremes: fmref against a 50-digit mpmath oracle (docs/numerics.md).

Each numbered case reproduces a failure of an earlier kernel (far from the origin, huge |log p|,
cancelling divergence, overflow, near-singular covariances, schedules near t = 1, dtypes and
budgets) and fails if its fix is reverted. The property suite then draws mixtures, points and
times up to the boundary of the documented contract and records what it tried (printed with
``pytest -s``, summarised in ``test_contract_property``'s docstring).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import _oracle
import mpmath
import numpy as np
import pytest
import scipy.linalg
from _extreme_cases import TOL, Extreme, errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmref import GaussianMixture, Linear, MarginalPath
from fmref._xp import memory_budget
from fmref.schedules import VP, Custom, Polynomial

RTOL, ATOL = TOL["float64"]
TWO = GaussianMixture([0.5, 0.5], [[0.0, 1.0], [0.0, -1.0]], [1.0, 1.0])


def _oracle_for(gm: GaussianMixture, x: Any, t: float, sched: Any = None) -> dict[str, Any]:
    sched = _oracle.SCHEDULES["linear"] if sched is None else sched
    return _oracle.marginal(gm.weights, gm.means, gm.full_covs(), np.asarray(x, float), t, sched)


def _close(got: Any, want: Any, rtol: float = RTOL, atol: float = ATOL, what: str = "") -> None:
    np.testing.assert_allclose(np.asarray(got, float), want, rtol=rtol, atol=atol, err_msg=what)


# -- 1. far from the origin: residuals formed before the rotation --------------------------
@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_far_from_origin(kind: str) -> None:
    """A mode at 1e6 with spread 1e-6: x − μ is exact in float64, so the score must be too.

    The issue's case: score ≈ −1 000 007.6 where a shift folded into the GEMM gave −1 000 000.
    """
    if kind == "isotropic":
        gm = GaussianMixture.gaussian([1e6, 0.0], 1e-12)
        x = np.array([[1e6 + 1e-6, 3e-7]])
    else:
        cov = 1e-12 * np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.7]])
        gm = GaussianMixture.gaussian([1e6, -3e5, 7e5], cov)
        x = np.array([[1e6 + 1e-6, -3e5 - 2e-6, 7e5 + 5e-7]])
    want = _oracle_for(gm, x, 1.0)
    got = MarginalPath(gm, Linear()).evaluate(x, 1.0, ("score", "log_prob", "dlog_prob_dt"))
    for q, v in got.items():
        _close(v, want[q], what=q)
    if kind == "isotropic":
        assert got["score"][0, 0] == pytest.approx(-1_000_007.6, rel=1e-7)


def test_exact_routes_on_every_backend(backend: Any) -> None:
    """The exact residual route and the centred divergence run on every array namespace."""
    cov = 1e-12 * np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.7]])
    gm = GaussianMixture([0.5, 0.5], [[1e6, -3e5, 7e5], [1e6, -3e5, 7e5 + 1e-5]], [cov, cov])
    x = 0.75 * gm.means + np.array([[1e-6, -2e-6, 5e-7], [0.0, 3e-7, 2e-6]])  # near α μ_k
    want = _oracle_for(gm, x, 0.75)
    got = MarginalPath(gm, Linear()).evaluate(backend.asarray(x), 0.75, ("score", "divergence"))
    s, div = backend.to_numpy(got["score"]), backend.to_numpy(got["divergence"])
    _close(s, want["score"], atol=RTOL * np.abs(want["score"]).max())
    _close(div, want["divergence"], atol=RTOL * want["divergence_scale"].max())
    # 3e4 σ from full-covariance modes: the centred divergence, s and u rotated in by a GEMM
    c2 = np.array([[1.0, 0.3], [0.3, 0.8]])
    gm2 = GaussianMixture([0.5, 0.5], [[0.0, 1.0], [0.0, -1.0]], [c2, c2])
    x2 = np.array([[3e4, -2.0], [-1e4, 5e3]])
    want2 = _oracle_for(gm2, x2, 0.9)
    got2 = MarginalPath(gm2, Linear()).divergence(backend.asarray(x2), 0.9)
    _close(backend.to_numpy(got2), want2["divergence"], what="centred divergence")


# -- 2. huge |log p|: responsibilities renormalised -----------------------------------------
@pytest.mark.parametrize("far", [1e8, 1e9])
def test_responsibilities_sum_to_one_at_huge_log_p(far: float) -> None:
    """Two unit Gaussians at (0, ±1), x = (far, 0): γ = (½, ½) and s = −x exactly."""
    x = np.array([[far, 0.0]])
    got = MarginalPath(TWO, Linear()).evaluate(x, 1.0, ("responsibilities", "score"))
    _close(got["responsibilities"], [[0.5, 0.5]], rtol=1e-12, atol=0)
    _close(got["score"], [[-far, 0.0]], rtol=1e-12, atol=1e-12)


# -- 3. the divergence and Jacobian in centred form -----------------------------------------
@pytest.mark.parametrize(
    ("x", "t"),
    [([1e4, 0.3], 0.0), ([1e4, 0.3], 0.5), ([3e4, -2.0], 0.9)],
    ids=["t0", "t0.5", "t0.9"],
)
def test_divergence_far_from_the_modes(x: list[float], t: float) -> None:
    """Thousands of σ from the modes Σγ s_k·u_k − s·u cancels; the centred form does not."""
    xs = np.array([x])
    want = _oracle_for(TWO, xs, t)
    got = MarginalPath(TWO, Linear()).evaluate(xs, t, ("divergence", "jacobian", "dlog_prob_dt"))
    _close(got["divergence"], want["divergence"], what="divergence")
    _close(got["jacobian"], want["jacobian"], atol=ATOL * np.abs(want["jacobian"]).max())
    _close(got["dlog_prob_dt"], want["dlog_prob_dt"], what="dlog_prob_dt")


def test_divergence_far_float32_is_finite_and_close() -> None:
    """float32 at 1e4 σ, t = 0 (all components coincide): no NaN, −2 within float32 tolerance."""
    x = np.array([[1e4, 0.3]], dtype=np.float32)
    got = MarginalPath(TWO, Linear()).divergence(x, 0.0)
    _close(got, [-2.0], *TOL["float32"])


@pytest.mark.parametrize("t", [1 - 1e-6, 1 - 1e-9])
def test_dirac_near_one(t: float) -> None:
    """Dirac data near t = 1 (v = β² → 0): every quantity to tolerance, divergence included."""
    g = np.random.default_rng(3)
    gm = GaussianMixture.empirical(g.normal(size=(4, 3)))
    beta = 1 - t
    x = t * gm.means[[0, 2, 3]] + beta * g.normal(size=(3, 3))
    qs = ("score", "vector_field", "divergence", "jacobian", "posterior_mean", "log_prob")
    want = _oracle_for(gm, x, t)
    got = MarginalPath(gm, Linear()).evaluate(x, t, qs)
    for q in qs:
        w = want[q]
        scale = np.abs(w).reshape(len(w), -1).max(axis=1).reshape((-1,) + (1,) * (w.ndim - 1))
        assert np.all(np.abs(got[q] - w) <= ATOL + RTOL * scale), q


def test_dirac_at_its_own_point_two_product() -> None:
    """x = fl(α μ) exactly, near t = 1: the residual is α μ's rounding error, ~1e-17.

    Without the two-product the kernel sees r = 0 and the score 0; the exact score is
    −r/β², of order one here.
    """
    mu = np.array([[0.1, 0.7, -0.3]])
    gm = GaussianMixture.empirical(mu)
    t = 1 - 2.0**-27
    x = t * mu
    want = _oracle_for(gm, x, t)
    got = MarginalPath(gm, Linear()).score(x, t)
    assert np.abs(want["score"]).max() > 0.1
    _close(got, want["score"], atol=RTOL * np.abs(want["score"]).max())


# -- 4. overflow ----------------------------------------------------------------------------
def test_score_when_quadratic_forms_overflow() -> None:
    """|x| = 1e200: |x|²/v overflows, the score −x/v = −2e200 does not."""
    gm = GaussianMixture.gaussian([0.0, 0.0], 1.0)
    x = np.full((1, 2), 1e200)
    got = MarginalPath(gm, Linear()).evaluate(x, 0.5, ("score", "log_prob", "responsibilities"))
    _close(got["score"], [[-2e200, -2e200]], rtol=1e-12, atol=0)
    assert got["log_prob"][0] == -math.inf
    # two components: all the mass goes to the nearer one, as it does in the limit
    gm2 = GaussianMixture([0.9, 0.1], [[0.0, 0.0], [1e199, 0.0]], [1.0, 1.0])
    got2 = MarginalPath(gm2, Linear()).responsibilities(np.array([[1e200, 0.0]]), 0.5)
    _close(got2, [[0.0, 1.0]], rtol=0, atol=0)


def test_huge_covariance_refused() -> None:
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture.gaussian([0.0, 0.0], 1e308 * np.eye(2))


def test_float32_points_refused_for_a_mixture_beyond_float32() -> None:
    gm = GaussianMixture.gaussian([1e39, 0.0], 1.0)
    with pytest.raises(ValueError, match="float64"):
        MarginalPath(gm, Linear()).score(np.ones((1, 2), dtype=np.float32), 0.5)


# -- 5. near-singular covariances -----------------------------------------------------------
def _ill(seed: int, cond: float, d: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    q = np.linalg.qr(g.normal(size=(d, d)))[0]
    lam = np.logspace(0, -np.log10(cond), d)
    cov = (q * lam) @ q.T
    cov = 0.5 * cov + 0.5 * cov.T
    mu = g.normal(size=d)
    return cov, mu, mu + (g.normal(size=(3, d)) * np.sqrt(lam)) @ q.T


def test_near_singular_like_cholesky() -> None:
    """cond(Σ) = 1e12 at t = 1: fmref's worst score error is within 2× of a Cholesky solve's.

    (At this condition number no float64 algorithm meets rtol 1e-7 on every point: the
    Cholesky route itself is ~160× over it on these seeds; eigh alone was ~10× worse still.)
    """
    err, err_chol = [], []
    for seed in range(8):
        cov, mu, x = _ill(seed, 1e12)
        gm = GaussianMixture.gaussian(mu, cov)
        want = _oracle.marginal(gm.weights, gm.means, cov[None], x, 1.0)["score"]
        got = MarginalPath(gm, Linear()).score(x, 1.0)
        chol = -scipy.linalg.cho_solve(scipy.linalg.cho_factor(cov), (x - mu).T).T
        err_chol.append(np.abs(chol - want).max() / np.abs(want).max())
        err.append(np.abs(got - want).max() / np.abs(want).max())
    assert max(err) <= 2 * max(err_chol), (err, err_chol)


def test_condition_1e8_within_tolerance() -> None:
    """cond(Σ) = 1e8 (the contract's limit) at t = 1: the documented tolerance holds."""
    for seed in range(6):
        cov, mu, x = _ill(seed, 1e8)
        gm = GaussianMixture.gaussian(mu, cov)
        want = _oracle.marginal(gm.weights, gm.means, cov[None], x, 1.0)["score"]
        got = MarginalPath(gm, Linear()).score(x, 1.0)
        _close(got, want, atol=RTOL * np.abs(want).max())


# -- 6. schedules ---------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.5, 2.0, 2.5, 3.7])
def test_polynomial_beta_near_one(p: float) -> None:
    """β = 1 − t^p to 4 ulps against mpmath, up to t = 1 − 2⁻⁵³ (where 1 − t^p rounds to 0)."""
    t = np.array([0.3, 0.9, 1 - 1e-6, 1 - 1e-12, 1 - 2.0**-53])
    got = Polynomial(p)(t)
    with mpmath.workdps(50):
        want = np.array([float(1 - mpmath.mpf(float(s)) ** p) for s in t])
        wbbd = np.array([float(_oracle.polynomial(p)(mpmath.mpf(float(s)))[3]) for s in t])
    _close(got.beta, want, rtol=1e-15, atol=0)
    _close(got.beta_beta_dot, wbbd, rtol=1e-14, atol=0)
    assert np.all(got.beta > 0)


def test_polynomial_dirac_just_before_one() -> None:
    """t = 1 − 2⁻⁵³ is a valid time for Dirac data (β > 0), not refused as if β = 0."""
    gm = GaussianMixture.empirical(np.array([[0.0, 1.0], [1.0, 0.0]]))
    mp = MarginalPath(gm, Polynomial(2.5))
    assert np.all(np.isfinite(mp.log_prob(np.array([[0.0, 1.0]]), 1 - 2.0**-53)))


def test_custom_beta_beta_dot_at_one_without_derivatives() -> None:
    """β = √(1 − t): ββ̇ = ½ d(1 − t)/dt = −½ on all of [0, 1], t = 1 included."""
    sched = Custom(lambda t: t, lambda t: np.sqrt(1 - t))
    got = sched(np.array([0.0, 0.5, 1 - 1e-9, 1.0])).beta_beta_dot
    _close(got, [-0.5] * 4, rtol=1e-6, atol=0)


def test_custom_difference_step_float32() -> None:
    """α = t in float32: the differenced α̇ is 1 to ~1e-5 (a 1e-5 step gave 1.0014)."""
    sched = Custom(lambda t: t, lambda t: 1 - t)
    t = np.linspace(0, 1, 17, dtype=np.float32)
    sv = sched(t)
    _close(sv.alpha_dot, np.ones(17), rtol=2e-5, atol=0)
    _close(sv.beta_dot, -np.ones(17), rtol=2e-5, atol=0)


# -- 7. dtypes and scalars ------------------------------------------------------------------
def test_float16_points_refused() -> None:
    mp = MarginalPath(TWO, Linear())
    with pytest.raises(TypeError, match="float32/float64"):
        mp.score(np.zeros((1, 2), dtype=np.float16), 0.5)


def test_complex_custom_schedule_refused() -> None:
    sched = Custom(lambda t: t + 0j, lambda t: 1 - t)
    with pytest.raises(TypeError, match="real floating"):
        sched(np.array([0.5]))


def test_numpy_scalars_accepted() -> None:
    assert Polynomial(np.int64(2)) == Polynomial(2.0)
    assert VP(np.float64(0.1), np.int32(20)) == VP(0.1, 20.0)
    mp = MarginalPath(TWO, Linear(), memory_budget=np.int64(2**20))
    ref = MarginalPath(TWO, Linear()).score(np.ones((3, 2)), 0.5)
    _close(mp.score(np.ones((3, 2)), 0.5), ref, rtol=0, atol=0)


# -- 8. the memory budget -------------------------------------------------------------------
def test_row_over_budget_warns() -> None:
    """k = 256, d = 512, 1 MiB: one row's temporaries exceed the budget, and fmref says so."""
    g = np.random.default_rng(0)
    gm = GaussianMixture(np.full(256, 1 / 256), g.normal(size=(256, 512)), np.ones(256))
    mp = MarginalPath(gm, Linear(), memory_budget=2**20)
    with pytest.warns(RuntimeWarning, match="memory budget"):
        mp.score(np.zeros((2, 512)), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MarginalPath(gm, Linear()).score(np.zeros((2, 512)), 0.5)  # the default fits a row


@pytest.mark.parametrize("raw", ["inf", "1e400", "nan"])
def test_env_budget_not_finite(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMREF_MEMORY_BUDGET", raw)
    with pytest.raises(ValueError, match="FMREF_MEMORY_BUDGET"):
        memory_budget()


# -- 9. the contract, as a property -----------------------------------------------------------
#: Contract limits (docs/numerics.md): distance from the modes in standard deviations of S_k(t),
#: condition number of Σ_k, and the latest time for Dirac data, by dtype.
CONTRACT = {
    "float64": {"dist": 1e4, "cond": 1e8},
    "float32": {"dist": 20.0, "cond": 30.0},
}
_TRIED: list[Extreme] = []


@st.composite
def extremes(draw: Any) -> Extreme:
    dtype = draw(st.sampled_from(["float64", "float32"]))
    lim = CONTRACT[dtype]
    kind = draw(st.sampled_from(["isotropic", "diagonal", "full", "dirac"]))
    # distances and condition numbers log-uniform up to the limit, with the limit itself likely
    dist = draw(
        st.one_of(st.just(lim["dist"]), st.floats(-1, math.log10(lim["dist"])).map(lambda e: 10**e))
    )
    cond = draw(
        st.one_of(st.just(lim["cond"]), st.floats(0, math.log10(lim["cond"])).map(lambda e: 10**e))
    )
    eps = 2.0**-53 if dtype == "float64" else 2.0**-24
    ends = [0.0, 1e-12, 1e-3, 1 - 1e-3, 1 - 1e-6, 1 - 2 * eps, 1.0]
    pick = draw(st.integers(0, len(ends) + 1))  # each end as likely as a uniform t
    t = ends[pick] if pick < len(ends) else draw(st.floats(0, 1))
    if kind == "dirac":
        # t < 1; in float32 the means' rounding (ε|μ|) must stay below β·σ: β ≥ 0.1 here
        t = min(t, 1 - 2 * eps) if dtype == "float64" else min(t, 0.9)
    if dtype == "float32":
        t = float(np.float32(t))
    return Extreme(
        kind=kind,
        k=draw(st.integers(1, 3)),
        d=draw(st.integers(1, 3)),
        cond=cond if kind in ("full", "diagonal") else 1.0,
        dist=dist,
        t=t,
        dtype=dtype,
        schedule=draw(st.sampled_from(["linear", "cosine", "sqrt_beta"])),
        seed=draw(st.integers(0, 2**16)),
    )


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if _TRIED:
        print(f"\n[test_extremes] contract property: {len(_TRIED)} cases tried")
        for key in ("dtype", "kind", "schedule"):
            print(f"  {key}: {dict(Counter(getattr(c, key) for c in _TRIED))}")
        for dtype in CONTRACT:
            cs = [c for c in _TRIED if c.dtype == dtype]
            if cs:
                print(
                    f"  {dtype}: max distance {max(c.dist for c in cs):.3g} σ, "
                    f"max cond {max(c.cond for c in cs):.3g}, "
                    f"t = 1: {sum(c.t == 1 for c in cs)}, t ≥ 1 − 1e-6: "
                    f"{sum(1 - 1e-6 <= c.t < 1 for c in cs)}, t ≤ 1e-3: "
                    f"{sum(c.t <= 1e-3 for c in cs)}"
                )


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=extremes())
def test_contract_property(case: Extreme) -> None:
    """Every quantity within the documented tolerance anywhere inside the contract.

    Drawn: float64 and float32; isotropic, diagonal, full and Dirac mixtures with k, d ≤ 3;
    points at 0.1 to the contract's distance from a mode (1e4 σ in float64, 20 σ in float32,
    the limit itself drawn often); condition numbers up to 1e8 / 30; t at 0, 1e-12, 1e-3,
    1 − 1e-3, 1 − 1e-6, 1 − 2ε and 1 (t < 1 for Dirac data), or uniform; Linear, Cosine and
    SqrtBeta. The loaded profile sets the count (ci: 25 examples, a few seconds; dev: 100);
    the run prints what it tried under -s.
    """
    _TRIED.append(case)
    bad = {q: e for q, e in errors(case).items() if not e <= 1}
    assert not bad, (case, bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full", "dirac"])
def test_contract_corners(dtype: str, kind: str) -> None:
    """The contract's corners, always run: the distance and condition limits at both ends of t."""
    lim = CONTRACT[dtype]
    ts = [0.0, 0.5, 1.0] if kind != "dirac" else [0.0, 0.5, 0.9 if dtype == "float32" else 1 - 1e-9]
    for t in ts:
        for sched in ("linear", "cosine"):
            case = Extreme(kind, 3, 3, lim["cond"], lim["dist"], t, dtype, sched, seed=7)
            bad = {q: e for q, e in errors(case).items() if not e <= 1}
            assert not bad, (case, bad)
