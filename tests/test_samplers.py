"""ODE samplers: exact quadrature cases, convergence orders against the closed-form flow,
adaptive reference vs fine RK4, the particle view of the continuity equation, bad input."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmref.exact import gaussian_flow
from fmref.marginals import MarginalPath
from fmref.metrics import compare_log_prob, energy_distance, energy_null
from fmref.mixtures import GaussianMixture, eight_gaussians
from fmref.samplers import METHODS, ORDERS, integrate, sample
from fmref.schedules import VP, Cosine, Linear

MEAN = np.array([1.5, -0.5])
COV = np.array([[2.0, 0.6], [0.6, 0.5]])
FIXED = tuple(name for name, m in METHODS.items() if not m.adaptive)


def _mixture() -> GaussianMixture:
    """A 2-D mixture with full, unequal covariances and unequal weights."""
    covs = np.array(
        [[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.3, 0.0], [0.0, 0.1]]]
    )
    return GaussianMixture([0.5, 0.3, 0.2], [[2.0, 1.0], [-2.0, 0.5], [0.0, -2.5]], covs)


# Quadrature problems: u(x, t) = f(t) (independent of x), so X_1 − X_0 is a quadrature rule
# applied to f on the grid, with a known closed form for each method (h = 1/N).
def _quad_case(method: str, n_steps: int) -> float:
    h = 1.0 / n_steps
    return {
        "euler": 1 / 3 - h / 2 + h * h / 6,  # left Riemann sum of t²
        "heun": 1 / 3 + h * h / 6,  # trapezoid rule
        "midpoint": 1 / 3 - h * h / 12,  # midpoint rule
        "rk4": 1 / 3,  # Simpson's rule, exact for t²
    }[method]


@pytest.mark.parametrize("method", FIXED)
def test_quadrature_rules_for_time_only_fields(method):
    """For u = t², each method reduces to its known quadrature rule (Euler: Algorithm 1)."""
    x0 = np.zeros((3, 2))
    for n_steps in (1, 4, 7):
        res = integrate(lambda x, t: (t * t)[:, None] + 0 * x, x0, method=method, steps=n_steps)
        want = _quad_case(method, n_steps)
        np.testing.assert_allclose(res.x, np.full((3, 2), want), rtol=1e-13, atol=1e-15)
        assert res.nfe == len(METHODS[method].nodes) * n_steps
        np.testing.assert_allclose(res.times, np.arange(n_steps + 1) / n_steps, rtol=0, atol=1e-15)


def test_euler_is_algorithm_1():
    """Algorithm 1 by hand: t = 0, h = 1/n; X ← X + h u_t(X); t ← t + h."""
    mp = MarginalPath(eight_gaussians(), Linear())
    x = np.random.default_rng(0).standard_normal((50, 2))
    got = integrate(mp.vector_field, x, method="euler", steps=10)
    h, t = 0.1, 0.0
    for _ in range(10):
        x = x + h * mp.vector_field(x, t)
        t = t + h
    np.testing.assert_allclose(got.x, x, rtol=1e-13, atol=1e-13)


def _global_errors(method, schedule, steps_list):
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, COV), schedule)
    x0 = np.random.default_rng(1).standard_normal((64, 2))
    errs = []
    for s in steps_list:
        res = integrate(mp.vector_field, x0, method=method, steps=s, return_trajectory=True)
        exact = np.stack([gaussian_flow(MEAN, COV, schedule, x0, float(t)) for t in res.times])
        errs.append(np.abs(res.trajectory - exact).max())
    return np.array(errs)


# Expected slopes: the table's order, except one case of superconvergence. Midpoint under
# Linear: in the eigenbasis the flow is y(t) = √(α²λ + β²) y_0 with a quadratic radicand, for
# which the midpoint rule's h³ local error term vanishes (local error O(h⁴), checked
# numerically: it drops 16x per halving), so its global order is 3 there; under Cosine it is
# the table's generic 2.
SUPERCONVERGENT = {("midpoint", "Linear"): 3}
ORDER_CASES = [
    (name, schedule, SUPERCONVERGENT.get((name, type(schedule).__name__), METHODS[name].order))
    for schedule in (Linear(), Cosine())
    for name in FIXED
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "schedule", "order"), ORDER_CASES, ids=str)
def test_empirical_convergence_order(method, schedule, order):
    """Slope of log(max global error over the grid) vs log h, against gaussian_flow."""
    # Grids where the error stays well above rounding and below the pre-asymptotic regime.
    steps = (16, 32, 64, 128) if METHODS[method].order >= 4 else (8, 16, 32, 64)
    errs = _global_errors(method, schedule, steps)
    assert np.all(errs > 1e-12), "errors must stay above rounding for the fit to mean anything"
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.25, (method, schedule, slope, errs)
    assert ORDERS[method] == METHODS[method].order <= order


def _recorded_calls(method: str, t: float, t_next: float) -> list[float]:
    """Times at which one step of ``method`` from t to t_next calls the field."""
    seen: list[float] = []

    def field(x, tt):
        seen.append(float(tt[0]))
        return np.sin(x) + tt[:, None]

    integrate(field, np.zeros((2, 3)), method=method, grid=np.array([t, t_next]))
    return seen


@pytest.mark.parametrize("method", FIXED)
@pytest.mark.parametrize(("t", "t_next"), [(0.25, 0.75), (0.1, 0.4), (0.9, 0.2)])
def test_stage_nodes_are_the_times_of_the_field_calls(method, t, t_next):
    """The table's nodes c_i are exactly where each step calls the field: t + c_i h, in order
    (forward and backward steps)."""
    nodes = METHODS[method].nodes
    assert all(isinstance(c, Fraction) and 0 <= c <= 1 for c in nodes)
    want = [t + float(c) * (t_next - t) for c in nodes]
    np.testing.assert_allclose(_recorded_calls(method, t, t_next), want, rtol=0, atol=1e-15)


def test_stage_node_check_catches_a_wrong_node():
    """A plausible mistake, midpoint's second call at t + h instead of t + h/2, is caught."""
    wrong = [0.25 + c * 0.5 for c in (0.0, 1.0)]
    got = _recorded_calls("midpoint", 0.25, 0.75)
    assert not np.allclose(got, wrong, rtol=0, atol=1e-15)


def test_method_table_is_what_integrate_accepts():
    """Every table entry runs; every name outside it is refused, naming the argument."""
    for name in METHODS:
        res = integrate(lambda x, t: -x, np.ones((1, 1)), method=name, steps=100)
        assert res.method == name
        np.testing.assert_allclose(res.x, np.exp(-1.0), rtol=1e-2, atol=0)
    with pytest.raises(ValueError, match="method must be one of"):
        integrate(lambda x, t: -x, np.ones((1, 1)), method="rk3")
    with pytest.raises(TypeError, match="method must be one of"):
        integrate(lambda x, t: -x, np.ones((1, 1)), method=None)
    assert {n for n, m in METHODS.items() if m.adaptive} == {"rk45", "dop853"}
    assert all(m.nodes is None and m.scipy_name for m in METHODS.values() if m.adaptive)


@pytest.mark.slow
def test_adaptive_converges_to_exact_flow():
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, COV), Cosine())
    x0 = np.random.default_rng(2).standard_normal((32, 2))
    exact = gaussian_flow(MEAN, COV, Cosine(), x0, 1.0)
    for method in ("rk45", "dop853"):
        res = integrate(mp.vector_field, x0, method=method, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(res.x, exact, rtol=0, atol=1e-9)
        assert res.times[0] == 0.0 and res.times[-1] == 1.0
        assert np.all(np.diff(res.times) > 0)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", [Linear(), Cosine()], ids=repr)
def test_adaptive_agrees_with_fine_rk4_on_mixture(schedule):
    mp = MarginalPath(_mixture(), schedule)
    x0 = np.random.default_rng(3).standard_normal((200, 2))
    fine = integrate(mp.vector_field, x0, method="rk4", steps=800)
    for method in ("rk45", "dop853"):
        res = integrate(mp.vector_field, x0, method=method, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(res.x, fine.x, rtol=0, atol=1e-7)
    # A loose tolerance is visibly worse: the agreement above is not vacuous.
    loose = integrate(mp.vector_field, x0, method="rk45", rtol=1e-2, atol=1e-2)
    assert np.abs(loose.x - fine.x).max() > 1e-5


@pytest.mark.slow
def test_backward_integration_inverts_forward():
    mp = MarginalPath(_mixture(), Cosine())
    x0 = np.random.default_rng(4).standard_normal((100, 2))
    fwd = integrate(mp.vector_field, x0, method="dop853", rtol=1e-11, atol=1e-11)
    back = integrate(mp.vector_field, fwd.x, method="dop853", t0=1.0, t1=0.0, rtol=1e-11,
                     atol=1e-11)  # fmt: skip
    np.testing.assert_allclose(back.x, x0, rtol=0, atol=1e-7)
    grid = np.linspace(1.0, 0.0, 301)
    back4 = integrate(mp.vector_field, fwd.x, method="rk4", grid=grid, return_trajectory=True)
    np.testing.assert_allclose(back4.x, x0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(back4.times, grid)
    assert back4.trajectory.shape == (301, 100, 2)


def test_nonuniform_grid_against_exact_flow():
    grid = np.linspace(0.0, 1.0, 81) ** 1.5
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, COV), Linear())
    x0 = np.random.default_rng(5).standard_normal((20, 2))
    res = integrate(mp.vector_field, x0, method="rk4", grid=grid)
    exact = gaussian_flow(MEAN, COV, Linear(), x0, 1.0)
    np.testing.assert_allclose(res.x, exact, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rk4", "dop853"])
def test_backends_agree(backend, method):
    mp = MarginalPath(_mixture(), Linear())
    x0 = np.random.default_rng(6).standard_normal((30, 2))
    want = integrate(mp.vector_field, x0, method=method, steps=20, return_trajectory=True)
    got = integrate(
        mp.vector_field, backend.asarray(x0), method=method, steps=20, return_trajectory=True
    )
    assert type(got.x) is type(backend.asarray(x0))
    # Adaptive step control reacts to rounding differences between libraries, so there the
    # runs agree to the solver's tolerance (rtol 1e-8) rather than to rounding.
    tol = 1e-12 if method == "rk4" else 1e-7
    np.testing.assert_allclose(backend.to_numpy(got.x), want.x, rtol=tol, atol=tol)
    np.testing.assert_allclose(
        backend.to_numpy(got.trajectory)[-1], want.trajectory[-1], rtol=tol, atol=tol
    )
    if method == "rk4":
        assert got.nfe == want.nfe == 80


@pytest.mark.slow
def test_float32_runs_in_float32(backend32):
    mp = MarginalPath(_mixture(), Linear())
    x0 = np.random.default_rng(7).standard_normal((30, 2))
    want = integrate(mp.vector_field, x0, method="rk4", steps=50)
    got = integrate(mp.vector_field, backend32.asarray(x0), method="rk4", steps=50)
    assert got.x.dtype == backend32.dtype
    np.testing.assert_allclose(backend32.to_numpy(got.x), want.x, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_sample_starts_from_p_init_or_exact_p_t0():
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, COV), VP())
    # VP: α_0 ≠ 0, so start from exact p_0 samples; X_1 must have the data's moments.
    res = sample(mp.vector_field, 20_000, rng=8, marginal=mp, method="rk4", steps=50)
    se = np.sqrt(2.0 / 20_000) * np.diag(COV).max()
    np.testing.assert_allclose(np.cov(res.x.T), COV, rtol=0, atol=5 * se)
    np.testing.assert_allclose(res.x.mean(axis=0), MEAN, rtol=0, atol=5 * se)
    # p_init with the dimension inferred from the bound method's MarginalPath.
    lin = MarginalPath(GaussianMixture.gaussian(MEAN, COV), Linear())
    a = sample(lin.vector_field, 10, rng=9, method="euler", steps=3)
    x0 = np.random.default_rng(9).standard_normal((10, 2))
    np.testing.assert_allclose(a.x, integrate(lin.vector_field, x0, method="euler", steps=3).x,
                               rtol=1e-14, atol=1e-14)  # fmt: skip
    with pytest.raises(ValueError, match="p_init"):
        sample(lin.vector_field, 10, rng=0, t0=0.5)
    with pytest.raises(TypeError, match="dim"):
        sample(lambda x, t: x, 10, rng=0)


@pytest.mark.slow
def test_particles_follow_the_continuity_equation():
    """Push p_0 samples through the exact field; at several t they are distributed as p_t.

    Mean exact log p_t over the particles vs its expectation (from exact samples) at four
    times, and the energy distance to fresh exact samples vs its null level at two. A field
    scaled by 0.8 (which violates the continuity equation) fails both late in the path, so the
    checks have power.
    """
    mp = MarginalPath(eight_gaussians(), Linear())
    n = 1000
    x0 = mp.sample(n, 0.0, rng=10)
    checks = {0.25: 50, 0.5: 100, 0.75: 150, 1.0: 200}
    good = integrate(mp.vector_field, x0, method="rk4", steps=200, return_trajectory=True)
    bad = integrate(
        lambda x, t: 0.8 * mp.vector_field(x, t), x0, method="rk4", steps=200,
        return_trajectory=True,
    )  # fmt: skip
    g = np.random.default_rng(11)
    for t, i in checks.items():
        assert math.isclose(good.times[i], t, rel_tol=1e-15, abs_tol=1e-15)
        ref = mp.sample(20_000, t, rng=g)
        cmp = compare_log_prob(lambda y, t=t: mp.log_prob(y, t), good.trajectory[i], ref)
        assert abs(cmp.z) < 4, (t, cmp)
        if t >= 0.75:  # by t = 0.5 the 0.8x field has not yet moved mass far enough
            wrong = compare_log_prob(lambda y, t=t: mp.log_prob(y, t), bad.trajectory[i], ref)
            assert abs(wrong.z) > 6, (t, wrong)
        if t in (0.5, 1.0):
            # The null spread is dominated by mode-count fluctuations (8 modes) and the null
            # is right-skewed, hence a 5-standard-deviation level.
            null = energy_null(lambda m, r, t=t: mp.sample(m, t, rng=r), n, n, rng=g, repeats=15)
            level = null.mean() + 5 * null.std(ddof=1)
            stat = energy_distance(good.trajectory[i], ref[:n])
            assert stat < level, (t, stat, null)
            if t == 1.0:
                assert energy_distance(bad.trajectory[i], ref[:n]) > level


# -- bad input ----------------------------------------------------------------------------
def _u(x, t):
    return -x


@pytest.mark.parametrize(("steps", "error"), [(0, ValueError), (-3, ValueError),
                                              (2.5, TypeError), (True, TypeError)])  # fmt: skip
def test_steps_must_be_positive_int(steps, error):
    with pytest.raises(error, match="steps must be an int >= 1"):
        integrate(_u, np.zeros((2, 2)), steps=steps)


@given(st.lists(st.floats(0, 1), min_size=3, max_size=8))
def test_grid_must_be_strictly_monotone(ts):
    g = np.array(ts)
    d = np.diff(g)
    if np.all(d > 0) or np.all(d < 0):
        res = integrate(_u, np.ones((2, 2)), method="euler", grid=g)
        assert res.times.shape == g.shape
    else:
        with pytest.raises(ValueError, match="strictly increasing or strictly decreasing"):
            integrate(_u, np.ones((2, 2)), method="euler", grid=g)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid": [0.0, 0.5, 1.2]}, "grid: every time must lie in"),
        ({"grid": [0.0, np.nan]}, "grid: every time must lie in"),
        ({"grid": [[0.0, 1.0]]}, "1-D"),
        ({"t1": 1.5}, "t1 must be a finite real number >= 0.0 and <= 1.0"),
        ({"t0": -0.1}, "t0 must be a finite real number >= 0.0 and <= 1.0"),
        ({"t0": 0.3, "t1": 0.3}, "must differ"),
        ({"method": "rk2"}, "method must be one of"),
        ({"method": "dop853", "rtol": 0.0}, "rtol must be"),
        ({"method": "rk45", "atol": -1.0}, "atol must be"),
    ],
)
def test_bad_times_and_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        integrate(_u, np.zeros((2, 2)), **kwargs)


@pytest.mark.parametrize("method", ["euler", "rk4", "dop853"])
def test_field_errors_name_step_and_time(method):
    x0 = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) at step 0 \(t = 0\.0\)|at evaluation 0"):
        integrate(lambda x, t: x[:, :2], x0, method=method, steps=10)

    def blows_up(x, t):
        return np.where(t[:, None] > 0.55, np.nan, 1.0) * x

    pattern = r"non-finite values at step 6 \(t = 0\.6\d*\)" if method == "euler" else "non-finite"
    with pytest.raises(ValueError, match=pattern):
        integrate(blows_up, x0, method=method, steps=10)
    with pytest.raises(TypeError, match="callable"):
        integrate("u", x0, method=method)


def test_bad_x0():
    with pytest.raises(ValueError, match="x0 must have 2 dimension"):
        integrate(_u, np.zeros(3))
    with pytest.raises(ValueError, match="x0 must be finite"):
        integrate(_u, np.array([[np.nan, 0.0]]))
    with pytest.raises(TypeError, match="x0 must have a real floating dtype"):
        integrate(_u, np.zeros((2, 2), dtype=np.int64))


def test_field_must_keep_namespace_and_dtype():
    x0 = np.ones((4, 2))
    with pytest.raises(TypeError, match=r"dtype float32 at step 0 \(t = 0\.0\)"):
        integrate(lambda x, t: x.astype(np.float32), x0, method="euler", steps=2)
    xps = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="expected an array of x's namespace"):
        integrate(lambda x, t: xps.asarray(x), x0, method="heun", steps=2)


def test_docs_method_table():
    """docs/theory.md lists exactly the methods of the table, with their orders and nodes."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "theory.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in METHODS:
            rows[cells[0]] = (int(cells[1]), cells[2])
    want = {
        name: (m.order, "adaptive" if m.nodes is None else ", ".join(str(c) for c in m.nodes))
        for name, m in METHODS.items()
    }
    assert rows == want
