"""Bad input raises ValueError/TypeError naming the argument; valid input never yields NaN."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _strategies import PROPERTY, SCHEDULES, Case, cases, schedule_names, times, with_endpoints
from hypothesis import given

from fmref import conversions
from fmref.continuity import check, identity_residual, numerical_residual
from fmref.marginals import QUANTITIES, MarginalPath
from fmref.mixtures import WEIGHT_ATOL, GaussianMixture
from fmref.paths import GaussianPath
from fmref.schedules import VP, Custom, Linear, Polynomial

MEANS = [[0.0, 0.0], [1.0, 1.0]]


def _mp(schedule: Any = None) -> MarginalPath:
    gm = GaussianMixture([0.4, 0.6], MEANS, [[[1.0, 0.2], [0.2, 0.5]], [[0.7, 0.0], [0.0, 1.3]]])
    return MarginalPath(gm, schedule or Linear())


# -- mixture parameters --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "covs", "match"),
    [
        ([-0.1, 1.1], [1.0, 1.0], "weights"),
        ([0.5, 0.5 + 10 * WEIGHT_ATOL], [1.0, 1.0], "weights"),
        ([0.5, 0.4], [1.0, 1.0], "weights"),
        ([1.0], [1.0, 1.0], "weights"),
        ([0.5, np.nan], [1.0, 1.0], "weights"),
        ([0.5, 0.5], [[[1.0, 0.5], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], "covs"),  # asymmetric
        ([0.5, 0.5], [[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]], "covs"),  # indefinite
        ([0.5, 0.5], [1.0, -1.0], "covs"),
        ([0.5, 0.5], [[1.0, 1.0], [1.0, -0.5]], "covs"),
        ([0.5, 0.5], [1.0, 1.0, 1.0], "covs"),
        ([0.5, 0.5], np.ones((2, 3, 3)), "covs"),
        ([0.5, 0.5], [1.0, np.inf], "covs"),
    ],
)
def test_mixture_parameters(backend: Any, weights: Any, covs: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianMixture(backend.asarray(weights), backend.asarray(MEANS), backend.asarray(covs))


def test_mixture_parameter_types_and_means() -> None:
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([1.0], [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="means"):
        GaussianMixture([0.5, 0.5], [[0.0], [np.nan]], [1.0, 1.0])
    with pytest.raises(TypeError, match="weights"):
        GaussianMixture(["a", "b"], MEANS, [1.0, 1.0])
    with pytest.raises(TypeError, match="covs"):
        GaussianMixture([0.5, 0.5], MEANS, [True, True])
    with pytest.raises(ValueError, match="points"):
        GaussianMixture.empirical([0.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture.empirical([[0.0], [1.0]], weights=[0.2, 0.2])


def test_sampling_arguments() -> None:
    gm = GaussianMixture([1.0], [[0.0]], [1.0])
    with pytest.raises(ValueError, match=r"\bn\b"):
        gm.sample(-1, 0)
    with pytest.raises(TypeError, match=r"\bn\b"):
        gm.sample(2.0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        gm.sample(2, None)
    with pytest.raises(TypeError, match="rng"):
        gm.sample(2, 1.5)
    with pytest.raises(ValueError, match=r"\bt\b"):
        MarginalPath(gm, Linear()).sample(3, 1.5, 0)


# -- points and times ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((3, 3)), "x"),  # wrong d
        (np.zeros(2), "x"),  # 1-D
        (np.zeros((3, 2, 1)), "x"),
        (np.array([[0.0, np.nan]]), "x"),
        (np.array([[np.inf, 0.0]]), "x"),
    ],
)
def test_points_shape_and_finiteness(backend: Any, x: np.ndarray, match: str) -> None:
    mp = _mp()
    for q in QUANTITIES:
        with pytest.raises(ValueError, match=match):
            mp.evaluate(backend.asarray(x), 0.5, (q,))
    with pytest.raises(ValueError, match=match):
        identity_residual(mp, backend.asarray(x), 0.5)
    with pytest.raises(ValueError, match=match):
        check(mp, backend.asarray(x), 0.5)


@pytest.mark.parametrize("t", [-0.1, 1.1, float("nan"), float("inf")])
def test_time_outside_unit_interval(backend: Any, t: float) -> None:
    mp = _mp()
    x = backend.asarray(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\bt\b"):
        mp.log_prob(x, t)
    with pytest.raises(ValueError, match=r"\bt\b"):
        mp.vector_field(x, backend.asarray(np.array([0.5, t, 0.5])))
    with pytest.raises(ValueError, match=r"\bt\b"):
        Linear()(backend.asarray(np.array([0.5, t])))
    with pytest.raises(ValueError, match=r"\bt\b"):
        GaussianPath(Linear()).flow(x, x, t)
    with pytest.raises(ValueError, match=r"\bt\b"):
        numerical_residual(mp, mp.vector_field, x, t)


def test_time_shape(backend: Any) -> None:
    mp = _mp()
    x = backend.asarray(np.zeros((3, 2)))
    for bad in (np.full(4, 0.5), np.full((3, 1), 0.5)):
        with pytest.raises(ValueError, match=r"\bt\b"):
            mp.score(x, backend.asarray(bad))


def test_integer_and_mixed_dtypes(backend: Any) -> None:
    mp = _mp()
    x = backend.asarray(np.zeros((3, 2)))
    x_int = backend.xp.zeros((3, 2), dtype=backend.xp.int64)
    t_int = backend.xp.zeros((3,), dtype=backend.xp.int64)
    with pytest.raises(TypeError, match=r"\bx\b"):
        mp.log_prob(x_int, 0.5)
    with pytest.raises(TypeError, match=r"\bt\b"):
        mp.log_prob(x, t_int)
    with pytest.raises(TypeError, match=r"\bt\b"):
        mp.log_prob(x, True)
    with pytest.raises(TypeError, match=r"\bt\b"):
        mp.log_prob(x, None)
    with pytest.raises(TypeError, match=r"\bt\b"):
        Linear()(t_int)
    with pytest.raises(TypeError, match=r"\bt\b"):
        Linear()(None)
    # float32 points with a float64 time array of the same namespace.
    x32 = backend.xp.zeros((3, 2), dtype=backend.xp.float32)
    t64 = backend.asarray(np.full(3, 0.5))
    with pytest.raises(TypeError, match=r"\bt\b"):
        mp.vector_field(x32, t64)
    path = GaussianPath(Linear())
    with pytest.raises(TypeError, match=r"\bz\b"):
        path.conditional_vector_field(x32, x, 0.5)
    with pytest.raises(ValueError, match=r"\bz\b"):
        path.conditional_score(x, backend.asarray(np.zeros((2, 2))), 0.5)
    with pytest.raises(TypeError, match="x0"):
        path.flow(x_int, x, 0.5)
    with pytest.raises(TypeError, match="eps_hat"):
        conversions.score_from_eps_hat(Linear(), x, 0.5, x32)
    with pytest.raises(ValueError, match="eps_hat"):
        conversions.score_from_eps_hat(Linear(), x, 0.5, backend.asarray(np.zeros((2, 2))))


def test_complex_and_foreign_inputs() -> None:
    mp = _mp()
    with pytest.raises(TypeError, match=r"\bx\b"):
        mp.log_prob(np.zeros((3, 2), dtype=complex), 0.5)
    with pytest.raises(TypeError, match=r"\bx\b"):
        mp.log_prob("abc", 0.5)
    with pytest.raises(TypeError, match=r"\bt\b"):
        mp.log_prob(np.zeros((3, 2)), "0.5")


# -- where the formulas stop being valid ---------------------------------------------------
def test_dirac_data_at_one(backend: Any) -> None:
    for name in SCHEDULES:
        mp = MarginalPath(GaussianMixture.empirical([[0.0, 0.0], [1.0, 2.0]]), SCHEDULES[name])
        x = backend.asarray(np.zeros((2, 2)))
        with pytest.raises(ValueError, match=r"\bt\b"):
            mp.log_prob(x, 1.0)
        with pytest.raises(ValueError, match=r"\bt\b"):
            identity_residual(mp, x, 1.0)
        with pytest.raises(ValueError, match=r"\bt\b"):
            check(mp, x, 1.0)
    with pytest.raises(ValueError, match="singular"):
        GaussianMixture.empirical([[0.0], [1.0]]).score(np.zeros((1, 1)))


def test_conditional_path_at_one(backend: Any) -> None:
    x = backend.asarray(np.ones((2, 2)))
    path = GaussianPath(Linear())
    for f in (path.conditional_vector_field, path.conditional_score, path.conditional_log_prob):
        with pytest.raises(ValueError, match=r"\bt\b"):
            f(x, x, 1.0)
    with pytest.raises(ValueError, match=r"\bt\b"):
        GaussianPath(SCHEDULES["sqrt_beta"]).target(x, x, 1.0)


def test_infinite_schedule_derivative(backend: Any) -> None:
    mp = _mp(Polynomial(0.5))  # α̇ = ½ t^{-1/2} is infinite at t = 0
    x = backend.asarray(np.zeros((2, 2)))
    for q in ("vector_field", "divergence", "jacobian", "dlog_prob_dt"):
        with pytest.raises(ValueError, match=r"\bt\b"):
            mp.evaluate(x, 0.0, (q,))
    # The conditional path's field and target too (they gave NaN rows before).
    path = GaussianPath(Polynomial(0.5))
    t = backend.asarray(np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match=r"t: α̇_t or β̇_t is infinite"):
        path.conditional_vector_field(x, x, t)
    with pytest.raises(ValueError, match=r"t: α̇_t or β̇_t is infinite"):
        path.target(x, x, t)


def test_constructors_and_options() -> None:
    gm = GaussianMixture([1.0], [[0.0]], [1.0])
    with pytest.raises(TypeError, match="data"):
        MarginalPath("data", Linear())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        MarginalPath(gm, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget"):
        MarginalPath(gm, Linear(), memory_budget=-1)
    with pytest.raises(TypeError, match="schedule"):
        GaussianPath("linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantities"):
        MarginalPath(gm, Linear()).evaluate(np.zeros((1, 1)), 0.5, ("nope",))
    with pytest.raises(ValueError, match=r"\bp\b"):
        Polynomial(0.0)
    with pytest.raises(ValueError, match=r"\bp\b"):
        Polynomial(True)  # a bool is not an exponent
    with pytest.raises(ValueError, match=r"\bb\b"):
        VP(b=-1.0)
    with pytest.raises(ValueError, match=r"\bB\b"):
        VP(B=True)
    with pytest.raises(TypeError, match="alpha"):
        Custom(1.0, lambda t: 1 - t)  # type: ignore[arg-type]
    mp = MarginalPath(gm, Linear())
    x = np.zeros((2, 1))
    with pytest.raises(ValueError, match="h_t"):
        numerical_residual(mp, mp.vector_field, x, 0.5, h_t=0.0)
    with pytest.raises(ValueError, match="h_x"):
        numerical_residual(mp, mp.vector_field, x, 0.5, h_x=0.5)
    with pytest.raises(ValueError, match="field"):
        numerical_residual(mp, lambda xs, ts: xs[:1, :], x, 0.5)


# -- never a silent NaN ----------------------------------------------------------------------
@PROPERTY
@given(case=cases(max_k=4, max_d=4), name=schedule_names(), t=times())
@with_endpoints(0.0, 1.0, seed=False)
def test_valid_input_gives_finite_output(backend: Any, case: Case, name: str, t: float) -> None:
    """Every quantity at every t in [0, 1], endpoints included, is finite or a clear error."""
    mp = MarginalPath(case.gm, SCHEDULES[name])
    x = backend.asarray(np.random.default_rng(0).normal(size=(4, case.d)) * 3.0)
    for q in QUANTITIES:
        out = backend.to_numpy(mp.evaluate(x, t, (q,))[q])
        assert np.all(np.isfinite(out)), (q, t)
    assert np.all(np.isfinite(backend.to_numpy(identity_residual(mp, x, t))))
