"""The continuity equation ∂_t p_t + div(p_t u_t) = 0: the fallible check, differences, identity.

``check`` builds every term by differences of log_prob and of the field, so it is tested for
power (a mutated kernel, a field scaled by 1.01 and a conditional field fail it) as well as for
passing the exact field. ``identity_residual`` is zero by construction for any per-component
coefficients; its tests are bookkeeping tests (backends, chunking, endpoints), and
``test_identity_residual_stays_zero_under_a_mutation`` shows that it is not evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cases import (
    PROPERTY,
    SCHEDULES,
    Case,
    cases,
    make_case,
    schedule_names,
    times,
    with_endpoints,
)
from _reference import ab
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import multivariate_normal

from fmref import _gmm
from fmref.continuity import LogFormCheck, check, identity_residual, numerical_residual, residual
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture
from fmref.paths import GaussianPath

#: Steps for the convergence-order fit: moderate, so truncation (∝ h²) dominates rounding.
STEPS = (1e-2, 5e-3, 2.5e-3, 1.25e-3)


def _relative(check: Any, backend: Any) -> float:
    """‖residual‖₂ / ‖|∂_t p| + |div(p u)|‖₂ over the points."""
    res, scale = backend.to_numpy(check.residual), backend.to_numpy(check.scale)
    return float(np.linalg.norm(res) / np.linalg.norm(scale))


@PROPERTY
@given(case=cases(), name=schedule_names(), t=times(), seed=st.integers(0, 2**16))
@with_endpoints(0.0, 1.0)
def test_identity_residual_vanishes(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    """The closed-form identity is ≤ 1e-9 of its terms on every backend, t ∈ [0, 1].

    An identity of the algebra, so this tests bookkeeping (rotations, responsibilities,
    backends, endpoints), not that u_t solves the continuity equation: see ``check``.
    """
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    g = np.random.default_rng(seed)
    x = a * case.gm.sample(6, rng=g) + b * g.standard_normal((6, case.d))
    bx = backend.asarray(x)
    res = backend.to_numpy(identity_residual(mp, bx, t))
    parts = {
        k: backend.to_numpy(v)
        for k, v in mp.evaluate(
            bx, t, ("dlog_prob_dt", "divergence", "vector_field", "score")
        ).items()
    }
    scale = (
        np.abs(parts["dlog_prob_dt"])
        + np.abs(parts["divergence"])
        + np.abs(np.sum(parts["vector_field"] * parts["score"], axis=1))
    )
    assert np.all(np.isfinite(res))
    assert np.all(np.abs(res) <= 1e-9 * scale), np.max(np.abs(res) / scale)


def _setup(backend: Any) -> tuple[MarginalPath, Case, Any, float]:
    case = make_case(21, 3, 2, "full")
    mp = MarginalPath(case.gm, SCHEDULES["cosine"])
    t = 0.6
    a, b, _, _ = ab(SCHEDULES["cosine"], t)
    g = np.random.default_rng(4)
    x = a * case.gm.sample(8, rng=g) + b * g.standard_normal((8, 2))
    return mp, case, backend.asarray(x), t


def test_numerical_residual_exact_field_second_order(backend: Any) -> None:
    mp, _, x, t = _setup(backend)
    errs = [
        _relative(numerical_residual(mp, mp.vector_field, x, t, h_t=h, h_x=h), backend)
        for h in STEPS
    ]
    slope = np.polyfit(np.log(STEPS), np.log(errs), 1)[0]
    assert 1.8 <= slope <= 2.2, (slope, errs)
    # Each halving divides the error by ≈ 4.
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.3) & (ratios < 4.7)), ratios
    # At the default step the residual is at finite-difference accuracy.
    assert _relative(numerical_residual(mp, mp.vector_field, x, t), backend) < 1e-6


def test_numerical_residual_exact_field_at_endpoints(backend: Any) -> None:
    case = make_case(22, 2, 2, "diagonal")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    x = backend.asarray(np.random.default_rng(5).normal(size=(6, 2)))
    for t in (0.0, 1.0):  # one-sided time stencils
        assert (
            _relative(numerical_residual(mp, mp.vector_field, x, t, h_t=1e-3, h_x=1e-3), backend)
            < 1e-4
        )


@pytest.mark.parametrize("t", [5e-5, 1 - 5e-5])
def test_numerical_time_derivative_within_one_step_of_the_ends(backend: Any, t: float) -> None:
    """For t within h_t of 0 or 1 the one-sided stencil must sit at t, not at the end point."""
    case = make_case(22, 2, 2, "diagonal")
    mp = MarginalPath(case.gm, SCHEDULES["cosine"])
    x = np.random.default_rng(5).normal(size=(6, 2))
    # Anchored at the end point instead, the error is O(|t − end|): 1e-3 at 0, 100 % at 1.
    fd = numerical_residual(mp, mp.vector_field, backend.asarray(x), t, h_t=1e-4)
    exact = mp.dlog_prob_dt(x, t) * np.exp(mp.log_prob(x, t))  # ∂_t p = p ∂_t log p
    assert np.abs(exact).max() > 1e-6  # a derivative to get right, not a vanishing one
    np.testing.assert_allclose(
        backend.to_numpy(fd.dp_dt), exact, rtol=5e-5, atol=1e-6 * np.abs(exact).max()
    )


def test_numerical_residual_flags_conditional_field(backend: Any) -> None:
    mp, case, x, t = _setup(backend)
    path = GaussianPath(SCHEDULES["cosine"])
    z = case.gm.mean()

    def conditional(xs: Any, ts: Any) -> Any:  # u_t(x|z) at one fixed z: not the marginal field
        zs = backend.asarray(np.tile(z, (xs.shape[0], 1)))
        return path.conditional_vector_field(xs, zs, ts)

    rel = _relative(numerical_residual(mp, conditional, x, t, h_t=1e-3, h_x=1e-3), backend)
    assert rel > 1e-2, rel


def test_numerical_residual_flags_scaled_field(backend: Any) -> None:
    mp, _, x, t = _setup(backend)
    exact = _relative(numerical_residual(mp, mp.vector_field, x, t, h_t=1e-3, h_x=1e-3), backend)
    scaled = _relative(
        numerical_residual(
            mp, lambda xs, ts: 1.1 * mp.vector_field(xs, ts), x, t, h_t=1e-3, h_x=1e-3
        ),
        backend,
    )
    # 1.1 u leaves 0.1 div(p u) behind: about 0.1/2.1 ≈ 5 % of the terms.
    assert scaled > 1e-2, scaled
    assert exact < 1e-5, exact


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_identity_residual_float32(backend32: Any, t: float) -> None:
    """The identity in float32 is within 1e-4 of its terms (bookkeeping, not evidence)."""
    case = make_case(23, 3, 3, "full")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    x = backend32.asarray(np.random.default_rng(6).normal(size=(6, 3)))
    res = backend32.to_numpy(identity_residual(mp, x, t))
    parts = mp.evaluate(
        backend32.to_numpy(x), t, ("dlog_prob_dt", "divergence", "vector_field", "score")
    )
    scale = (
        np.abs(parts["dlog_prob_dt"])
        + np.abs(parts["divergence"])
        + np.abs(np.sum(parts["vector_field"] * parts["score"], axis=1))
    )
    assert np.all(np.abs(res) <= 1e-4 * scale), np.max(np.abs(res) / scale)


# -- check: the continuity equation by differences of log_prob and of the field -------------

#: (label, mixture, times): every covariance kind; Dirac data only for t < 1 (p_1 is no density).
_DIRAC = GaussianMixture(
    np.array([0.2, 0.5, 0.3]),
    np.array([[1.0, 0.0, -1.0], [-1.5, 0.5, 0.0], [0.0, 2.0, 1.0]]),
    np.zeros(3),
)
_NEAR_ENDS = (0.0, 1e-6, 0.02, 0.5, 0.98, 1 - 1e-6, 1.0)
MIXTURES = [
    ("isotropic", make_case(31, 3, 2, "isotropic").gm, _NEAR_ENDS),
    ("diagonal", make_case(32, 4, 3, "diagonal").gm, _NEAR_ENDS),
    ("full", make_case(33, 3, 4, "full").gm, _NEAR_ENDS),
    ("dirac", _DIRAC, (0.0, 1e-6, 0.5, 0.99, 1 - 1e-4)),
]
#: Schedules whose marginal moves at every t (Polynomial(p > 1) has α̇ = ββ̇ = 0 at t = 0, and
#: Cosine α̇ = ββ̇ = 0 at t = 1: p_t is stationary there and every term is zero).
MOVING = ("linear", "linear_vp", "vp", "sqrt_beta")
#: What the check must resolve: its error bound, relative to the size of the terms, in float64.
RESOLVES = 1e-4


def _points(mp: MarginalPath, t: float, n: int = 32, seed: int = 0) -> np.ndarray:
    return np.asarray(mp.sample(n, t, rng=np.random.default_rng(seed)))


@pytest.mark.parametrize("name", MOVING)
@pytest.mark.parametrize(("label", "gm", "ts"), MIXTURES, ids=[m[0] for m in MIXTURES])
def test_check_passes_the_exact_field(label: str, gm: GaussianMixture, ts: Any, name: str) -> None:
    """The exact u_t passes at every t, 1e-6 from each end too; its bound is ≤ 1e-4 of the terms."""
    mp = MarginalPath(gm, SCHEDULES[name])
    for t in ts:
        c = check(mp, _points(mp, t), t)
        assert c.ok, (label, name, t, np.max(np.abs(c.residual) / c.error))
        # The bound is small enough to mean something: a defect of 1e-4 of the terms would show.
        np.testing.assert_array_less(c.error, RESOLVES * c.scale)
        # And it is conservative: the residual of the exact field is far inside it.
        np.testing.assert_array_less(np.abs(c.residual), 0.5 * c.error)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_check_passes_the_exact_field_on_every_schedule(name: str) -> None:
    """Stationary instants included (Cosine at 1, Polynomial at 0), where every term is ~0."""
    mp = MarginalPath(make_case(30, 3, 2, "full").gm, SCHEDULES[name])
    for t in (0.0, 0.5, 1.0):
        c = check(mp, _points(mp, t), t)
        assert c.ok, (name, t, np.max(np.abs(c.residual) / c.error))


@pytest.mark.parametrize("name", MOVING)
@pytest.mark.parametrize(("label", "gm", "ts"), MIXTURES, ids=[m[0] for m in MIXTURES])
def test_check_fails_a_field_scaled_by_1_01(
    label: str, gm: GaussianMixture, ts: Any, name: str
) -> None:
    """1.01 u_t leaves −0.01 ∂_t log p_t: it fails at every point where ∂_t log p_t is not tiny."""
    mp = MarginalPath(gm, SCHEDULES[name])
    for t in ts:
        x = _points(mp, t)
        c = check(mp, x, t, field=lambda xs, ts_: 1.01 * mp.vector_field(xs, ts_))
        assert not c.ok, (label, name, t)
        # The residual is the predicted one (the exact ∂_t log p from the same check) ...
        dt = check(mp, x, t).dlog_prob_dt
        np.testing.assert_allclose(c.residual, -0.01 * dt, rtol=1e-4, atol=1e-6 * np.abs(dt).max())
        # ... and it is flagged wherever it exceeds the bound, which is most points.
        assert np.mean(~c.passed) >= 0.9, (label, name, t, np.mean(~c.passed))


def test_check_terms_are_the_derivatives_they_name() -> None:
    """Each term against an independent route: ∂_t log p and ∇log p by scipy densities."""
    case = make_case(34, 3, 2, "full")
    sched = SCHEDULES["cosine"]
    mp = MarginalPath(case.gm, sched)
    t, h = 0.4, 1e-5
    x = _points(mp, t, n=8)

    def log_p_scipy(xs: np.ndarray, tv: float) -> np.ndarray:
        a, b, _, _ = ab(sched, tv)
        return np.log(
            sum(
                w * multivariate_normal(a * m, a * a * c + b * b * np.eye(2)).pdf(xs)
                for w, m, c in zip(case.weights, case.means, case.covs, strict=True)
            )
        )

    c = check(mp, x, t)
    dt_ref = (log_p_scipy(x, t + h) - log_p_scipy(x, t - h)) / (2 * h)
    np.testing.assert_allclose(c.dlog_prob_dt, dt_ref, rtol=1e-6, atol=1e-8)
    e = np.eye(2) * h
    grad_ref = np.stack(
        [(log_p_scipy(x + e[i], t) - log_p_scipy(x - e[i], t)) / (2 * h) for i in range(2)], 1
    )
    u = mp.vector_field(x, t)
    np.testing.assert_allclose(c.u_dot_score, np.sum(u * grad_ref, 1), rtol=1e-6, atol=1e-8)
    # div u by differences of u with a plain central stencil (no Richardson).
    div_ref = sum(
        (mp.vector_field(x + e[i], t)[:, i] - mp.vector_field(x - e[i], t)[:, i]) / (2 * h)
        for i in range(2)
    )
    np.testing.assert_allclose(c.divergence, div_ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        c.residual, c.dlog_prob_dt + c.divergence + c.u_dot_score, rtol=0, atol=0
    )


def _mutate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triple c = αα̇λ + ββ̇ (the eigenvalues of ½Ṡ_k) and add 0.7: u_t moves, log p_t does not."""
    original = _gmm.Terms.half_sdot

    def wrong(self: Any, ad: Any, bbd: Any) -> Any:
        return 3 * original(self, ad, bbd) + 0.7

    monkeypatch.setattr(_gmm.Terms, "half_sdot", wrong)


@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_identity_residual_stays_zero_under_a_mutation(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The identity cannot see a wrong kernel: it is an identity, not a check."""
    mp = MarginalPath(make_case(35, 3, 2, kind).gm, SCHEDULES["cosine"])
    x = _points(mp, 0.6)
    u_right = mp.vector_field(x, 0.6)
    _mutate(monkeypatch)
    u_wrong = mp.vector_field(x, 0.6)
    # The mutation moves u_t by O(1) ...
    assert np.max(np.abs(u_wrong - u_right)) > 0.1
    # ... and the identity stays at rounding level all the same.
    np.testing.assert_allclose(identity_residual(mp, x, 0.6), 0.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["isotropic", "full"])
@pytest.mark.parametrize("t", [0.0, 0.6, 1.0])
def test_check_fails_under_the_same_mutation(
    monkeypatch: pytest.MonkeyPatch, kind: str, t: float
) -> None:
    """The same mutated kernel fails ``check``, at every point, including t = 0 and 1."""
    mp = MarginalPath(make_case(35, 3, 2, kind).gm, SCHEDULES["cosine"])
    x = _points(mp, t)
    assert check(mp, x, t).ok  # unmutated: passes
    _mutate(monkeypatch)
    c = check(mp, x, t)
    assert not c.ok
    assert np.mean(~c.passed) >= 0.9, np.mean(~c.passed)


def test_check_fails_a_conditional_field() -> None:
    """u_t(x|z) at one z is a plausible mistake (the CFM target in place of the marginal)."""
    case = make_case(36, 3, 2, "diagonal")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    path = GaussianPath(SCHEDULES["linear"])
    z = case.gm.mean()
    x = _points(mp, 0.5)
    c = check(
        mp,
        x,
        0.5,
        field=lambda xs, ts: path.conditional_vector_field(xs, np.tile(z, (xs.shape[0], 1)), ts),
    )
    assert np.mean(~c.passed) >= 0.9


def test_check_per_row_times_and_backends(backend: Any) -> None:
    """A time per row (spanning both ends) on every backend; same verdict as row by row."""
    case = make_case(37, 2, 3, "full")
    mp = MarginalPath(case.gm, SCHEDULES["vp"])
    ts = np.array([0.0, 1e-7, 0.3, 0.7, 1 - 1e-7, 1.0])
    g = np.random.default_rng(8)
    x = np.concatenate([mp.sample(1, tv, rng=g) for tv in ts])
    c = check(mp, backend.asarray(x), backend.asarray(ts))
    assert isinstance(c, LogFormCheck) and c.ok
    res = backend.to_numpy(c.residual)
    for i, tv in enumerate(ts):
        one = check(mp, x[i : i + 1], float(tv))
        np.testing.assert_allclose(res[i], one.residual[0], rtol=0, atol=one.error[0])
    wrong = check(
        mp,
        backend.asarray(x),
        backend.asarray(ts),
        field=lambda xs, tt: 1.01 * mp.vector_field(xs, tt),
    )
    assert not wrong.ok


def test_check_float32_resolves_a_percent() -> None:
    """In float32 (step ε^{1/5} ≈ 0.04) the bound is ~1e-3 of the terms: 1.01 u_t still fails."""
    case = make_case(38, 3, 2, "full")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    for t in (0.0, 0.5, 1.0):
        x = _points(mp, t).astype(np.float32)
        c = check(mp, x, t)
        assert c.ok and c.residual.dtype == np.float32
        np.testing.assert_array_less(c.error, 0.02 * c.scale)
        wrong = check(mp, x, t, field=lambda xs, ts: 1.01 * mp.vector_field(xs, ts))
        assert np.mean(~wrong.passed) >= 0.5, (t, np.mean(~wrong.passed))


def test_residual_is_a_deprecated_alias_of_the_identity() -> None:
    case = make_case(39, 2, 2, "diagonal")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    x = _points(mp, 0.3)
    with pytest.warns(DeprecationWarning, match="identity"):
        old = residual(mp, x, 0.3)
    np.testing.assert_allclose(old, identity_residual(mp, x, 0.3), rtol=0, atol=0)


def test_check_bad_step() -> None:
    mp = MarginalPath(make_case(40, 1, 2, "isotropic").gm, SCHEDULES["linear"])
    x = _points(mp, 0.5, n=2)
    with pytest.raises(ValueError, match="step"):
        check(mp, x, 0.5, step=0.5)
    with pytest.raises(TypeError, match="step"):
        check(mp, x, 0.5, step="small")
    with pytest.raises(ValueError, match="field must return shape"):
        check(mp, x, 0.5, field=lambda xs, ts: xs[:, :1])
    check(mp, x, 0.5, step=np.float64(1e-3))  # NumPy scalars are accepted
