"""Bad input raises ValueError/TypeError naming the argument; valid input never yields NaN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _cases import PROPERTY, SCHEDULES, Case, cases, schedule_names, times, with_endpoints
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
        gm.sample(-1, rng=0)
    with pytest.raises(TypeError, match=r"\bn\b"):
        gm.sample(2.0, rng=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rng"):
        gm.sample(2, rng=None)
    with pytest.raises(TypeError, match="rng"):
        gm.sample(2, rng=1.5)
    with pytest.raises(ValueError, match=r"\bt\b"):
        MarginalPath(gm, Linear()).sample(3, 1.5, rng=0)


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
    with pytest.raises(TypeError, match=r"\bp\b"):
        Polynomial(True)  # a bool is not an exponent
    with pytest.raises(ValueError, match=r"\bb\b"):
        VP(b=-1.0)
    with pytest.raises(TypeError, match=r"\bB\b"):
        VP(B=True)
    with pytest.raises(ValueError, match=r"\bB\b"):
        VP(b=2.0, B=1.0)
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
@pytest.mark.slow
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


# -- one rule for scalar arguments (fmref._check) ----------------------------------------------
# Each public entry is called twice, with Python scalars and with NumPy ones (int64/int32 for
# ints, float64 for floats: float32 would change the value itself), and must give the same
# result; then each scalar argument gets a wrong type (TypeError) and a wrong value
# (ValueError), and the message must name the argument.
def _scalar_entries() -> dict[str, Callable[[Callable[[int], Any], Callable[[float], Any]], Any]]:
    from fmref import likelihood, losses, metrics, samplers, sde
    from fmref.mixtures import eight_gaussians, random_2d, random_mixture
    from fmref.mlp import MLP
    from fmref.optim import Adam, cosine_decay
    from fmref.train import TrainConfig

    gm = GaussianMixture([0.4, 0.6], MEANS, [1.0, 0.5])
    mp = MarginalPath(gm, Linear())
    x = np.random.default_rng(0).standard_normal((6, 2))

    def adam(i: Any, r: Any) -> Any:
        p = [np.ones(2)]
        opt = Adam(
            p,
            lr=r(0.1),
            betas=(r(0.8), r(0.9)),
            eps=r(1e-8),
            weight_decay=r(0.01),
            clip_norm=r(1.0),
            schedule=cosine_decay(i(4), warmup=i(1)),
        )
        opt.step([np.array([0.5, -2.0])])
        return p[0]

    return {
        "GaussianMixture.sample": lambda i, r: gm.sample(i(5), rng=i(3)),
        "MarginalPath.sample": lambda i, r: mp.sample(i(5), r(0.7), rng=i(3)),
        "eight_gaussians": lambda i, r: eight_gaussians(r(4.0), r(0.2)).means,
        "random_2d": lambda i, r: random_2d(i(3), r(0.5), r(4.0), i(2)).means,
        "random_mixture": lambda i, r: (
            random_mixture(
                i(2),
                i(3),
                "full",
                rng=i(1),
                mean_scale=r(2.0),
                var_range=(r(0.3), r(1.0)),
                ridge=r(0.1),
            ).means
        ),
        "integrate": lambda i, r: integrate_rk(mp, x, i, r),
        "samplers.sample": lambda i, r: (
            samplers.sample(mp.vector_field, i(4), rng=i(2), dim=i(2), method="euler", steps=i(3)).x
        ),
        "integrate_sde": lambda i, r: (
            sde.integrate_sde(
                mp.vector_field,
                x,
                rng=i(1),
                sigma=r(0.5),
                score=mp.score,
                steps=i(3),
                t0=r(0.0),
                t1=r(0.9),
            ).x
        ),
        "sample_sde": lambda i, r: (
            sde.sample_sde(mp, i(4), rng=i(1), sigma=r(0.5), steps=i(3), t1=r(0.9)).x
        ),
        "log_likelihood": lambda i, r: (
            likelihood.log_likelihood(
                mp.vector_field, x, t0=r(0.0), t1=r(1.0), method="rk4", steps=i(3)
            ).log_prob
        ),
        "Hutchinson": lambda i, r: (
            likelihood.log_likelihood(
                mp.vector_field,
                x,
                method="euler",
                steps=i(2),
                divergence=likelihood.Hutchinson(
                    n_probes=i(2), rng=i(4), jacobian="fd", fd_step=r(1e-4)
                ),
            ).log_prob
        ),
        "mean_log_prob": lambda i, r: metrics.mean_log_prob(gm, x, rng=i(2), n_reference=i(50)).z,
        "energy_null": lambda i, r: metrics.energy_null(
            lambda m, g: gm.sample(m, rng=g), i(5), i(6), rng=i(1), repeats=i(2)
        ),
        "sliced_wasserstein": lambda i, r: metrics.sliced_wasserstein(
            x, x + 1.0, rng=i(1), n_projections=i(8), p=r(1.5)
        ),
        "Adam + cosine_decay": adam,
        "MLP": lambda i, r: MLP(i(2), (i(3),), time_frequencies=i(1), rng=i(0))(x, r(0.3)),
        "TrainConfig": lambda i, r: TrainConfig(
            steps=i(3), batch=i(4), lr=r(0.01), warmup=i(1), seed=i(2), clip_norm=r(1.0)
        ),
        "cfm_loss": lambda i, r: (
            losses.cfm_loss(mp.vector_field, mp, n=i(64), rng=i(1), t_max=r(0.9), bins=i(2)).value
        ),
        "Polynomial": lambda i, r: Polynomial(r(1.5))(np.asarray([0.5])).alpha,
        "VP": lambda i, r: VP(b=r(0.2), B=r(10.0))(np.asarray([0.5])).alpha,
    }


def integrate_rk(mp: MarginalPath, x: Any, i: Any, r: Any) -> Any:
    """Fixed-step and adaptive runs, every scalar option set."""
    from fmref.samplers import integrate

    a = integrate(mp.vector_field, x, method="rk4", steps=i(3), t0=r(0.1), t1=r(0.9)).x
    b = integrate(mp.vector_field, x, method="rk45", rtol=r(1e-6), atol=r(1e-8)).x
    return np.concatenate([a, b])


def _as_dict(v: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(v) if is_dataclass(v) else v


@pytest.mark.parametrize("integer", [np.int64, np.int32])
@pytest.mark.parametrize("entry", sorted(_scalar_entries()))
def test_numpy_scalars_work_where_python_ones_do(entry: str, integer: Any) -> None:
    call = _scalar_entries()[entry]
    want = call(int, float)
    got = call(integer, np.float64)
    if isinstance(want, dict) or hasattr(want, "__dataclass_fields__"):
        assert _as_dict(got) == _as_dict(want)
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def _bad_scalar_cases() -> list[tuple[str, Callable[[], Any], type[Exception], str]]:
    from fmref import likelihood, losses, metrics, samplers, sde
    from fmref.mixtures import eight_gaussians, random_2d, random_mixture
    from fmref.mlp import MLP
    from fmref.optim import Adam, cosine_decay
    from fmref.train import TrainConfig

    gm = GaussianMixture([0.4, 0.6], MEANS, [1.0, 0.5])
    mp = MarginalPath(gm, Linear())
    x = np.zeros((3, 2))
    u = mp.vector_field
    te, ve = TypeError, ValueError
    return [
        ("sample n type", lambda: gm.sample(2.0, rng=0), te, r"\bn\b"),
        ("sample n value", lambda: gm.sample(-1, rng=0), ve, r"\bn\b"),
        ("sample rng type", lambda: gm.sample(2, rng=1.5), te, r"\brng\b"),
        ("sample rng missing", lambda: gm.sample(2), te, r"\brng\b"),
        ("sample rng value", lambda: gm.sample(2, rng=-1), ve, r"\brng\b"),
        ("eight radius", lambda: eight_gaussians("5"), te, "radius"),
        ("eight variance", lambda: eight_gaussians(5.0, -1.0), ve, "variance"),
        ("random_2d nmodes", lambda: random_2d(True), te, "nmodes"),
        ("random_2d std", lambda: random_2d(3, 0.0), ve, "std"),
        ("random_mixture k", lambda: random_mixture(0, 2), ve, r"\bk\b"),
        ("random_mixture d", lambda: random_mixture(2, 2.0), te, r"\bd\b"),
        ("random_mixture var", lambda: random_mixture(2, 2, var_range=(1.0, 0.5)), ve, "var_range"),
        ("integrate steps type", lambda: samplers.integrate(u, x, steps=2.0), te, "steps"),
        ("integrate steps value", lambda: samplers.integrate(u, x, steps=0), ve, "steps"),
        ("integrate t0 type", lambda: samplers.integrate(u, x, t0="0"), te, r"\bt0\b"),
        ("integrate t1 value", lambda: samplers.integrate(u, x, t1=1.5), ve, r"\bt1\b"),
        ("integrate method", lambda: samplers.integrate(u, x, method="rk3"), ve, "method"),
        ("integrate rtol", lambda: samplers.integrate(u, x, method="rk45", rtol=0.0), ve, "rtol"),
        ("integrate atol", lambda: samplers.integrate(u, x, method="rk45", atol=None), te, "atol"),
        ("integrate field", lambda: samplers.integrate(3, x), te, "field"),
        ("sample n", lambda: samplers.sample(u, 0, rng=0), ve, r"\bn\b"),
        ("sample dim", lambda: samplers.sample(lambda x, t: x, 2, rng=0, dim=2.0), te, "dim"),
        ("sde rng", lambda: sde.integrate_sde(u, x, rng=None, sigma=0.0), te, "rng"),
        ("sde steps", lambda: sde.integrate_sde(u, x, rng=0, sigma=0.0, steps=True), te, "steps"),
        ("sample_sde n", lambda: sde.sample_sde(mp, 1.0, rng=0, sigma=0.0), te, r"\bn\b"),
        ("ll t0", lambda: likelihood.log_likelihood(u, x, t0=-0.1), ve, r"\bt0\b"),
        ("ll steps", lambda: likelihood.log_likelihood(u, x, method="rk4", steps=1.5), te, "steps"),
        ("hutch n_probes", lambda: likelihood.Hutchinson(rng=0, n_probes=0), ve, "n_probes"),
        ("hutch rng", lambda: likelihood.Hutchinson(rng="0"), te, "rng"),
        ("hutch fd_step", lambda: likelihood.Hutchinson(rng=0, fd_step="h"), te, "fd_step"),
        ("hutch probe", lambda: likelihood.Hutchinson(rng=0, probe=1), te, "probe"),
        (
            "mlp n_reference",
            lambda: metrics.mean_log_prob(gm, x, rng=0, n_reference=1),
            ve,
            "n_reference",
        ),
        (
            "energy repeats",
            lambda: metrics.energy_null(gm.sample, 4, 4, rng=0, repeats=1.0),
            te,
            "repeats",
        ),
        ("sw p", lambda: metrics.sliced_wasserstein(x, x, rng=0, p=0.5), ve, r"\bp\b"),
        (
            "sw n_projections",
            lambda: metrics.sliced_wasserstein(x, x, rng=0, n_projections=2.0),
            te,
            "n_projections",
        ),
        ("adam lr type", lambda: Adam([np.ones(1)], lr="1"), te, r"\blr\b"),
        ("adam lr value", lambda: Adam([np.ones(1)], lr=0.0), ve, r"\blr\b"),
        ("adam beta", lambda: Adam([np.ones(1)], betas=(0.9, 1.0)), ve, r"betas\[1\]"),
        ("cosine_decay steps", lambda: cosine_decay(np.float64(3)), te, "total_steps"),
        ("cosine_decay warmup", lambda: cosine_decay(3, warmup=3), ve, "warmup"),
        ("MLP dim", lambda: MLP(0, rng=0), ve, "dim"),
        ("MLP rng", lambda: MLP(2, rng=None), te, "rng"),
        (
            "MLP time_frequencies",
            lambda: MLP(2, rng=0, time_frequencies=1.0),
            te,
            "time_frequencies",
        ),
        ("TrainConfig steps", lambda: TrainConfig(steps=0), ve, "steps"),
        ("TrainConfig batch", lambda: TrainConfig(batch=2.0), te, "batch"),
        ("TrainConfig lr", lambda: TrainConfig(lr=float("nan")), ve, r"\blr\b"),
        ("TrainConfig objective", lambda: TrainConfig(objective="x"), ve, "objective"),
        ("cfm_loss n", lambda: losses.cfm_loss(u, mp, n=1), ve, r"\bn\b"),
        ("cfm_loss t_max", lambda: losses.cfm_loss(u, mp, t_max=0.0), ve, "t_max"),
        ("cfm_loss bins", lambda: losses.cfm_loss(u, mp, bins=True), te, "bins"),
        ("cfm_loss rng", lambda: losses.cfm_loss(u, mp, rng=None), te, "rng"),
        ("Polynomial p", lambda: Polynomial("2"), te, r"\bp\b"),
        ("VP b", lambda: VP(b=0.0), ve, r"\bb\b"),
    ]


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [pytest.param(c, e, n, id=i) for i, c, e, n in _bad_scalar_cases()],
)
def test_wrong_scalar_type_or_value_names_the_argument(
    call: Callable[[], Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name) as info:
        call()
    assert type(info.value) is error  # not a subclass standing in for the other class


def test_positional_rng_is_deprecated_but_works() -> None:
    """The 0.1 spelling p.sample(1000, 0.7, rng) and GaussianMixture.sample(n, rng) still work,
    with a DeprecationWarning, and draw exactly what the keyword form draws."""
    gm = GaussianMixture([0.4, 0.6], MEANS, [1.0, 0.5])
    mp = MarginalPath(gm, Linear())
    with pytest.warns(DeprecationWarning, match="rng"):
        old = mp.sample(20, 0.7, np.random.default_rng(0))
    np.testing.assert_array_equal(old, mp.sample(20, 0.7, rng=np.random.default_rng(0)))
    with pytest.warns(DeprecationWarning, match="rng"):
        old = gm.sample(20, 5)
    np.testing.assert_array_equal(old, gm.sample(20, rng=5))
    with pytest.raises(TypeError, match="both"):
        gm.sample(20, 5, rng=5)


def test_rng_from_is_the_one_conversion() -> None:
    from fmref._check import check_rng
    from fmref.mixtures import rng_from

    assert rng_from is check_rng
    g = np.random.default_rng(1)
    assert check_rng(g) is g
    assert check_rng(np.int64(7)).integers(1 << 30) == np.random.default_rng(7).integers(1 << 30)
    for bad in (None, True, 1.0, np.random.RandomState(0)):
        with pytest.raises(TypeError, match="rng"):
            check_rng(bad)
