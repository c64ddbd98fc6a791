"""GaussianPath: the conditional flow, vector field, score and density, checked independently."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from _cases import SCHEDULES
from _reference import fd_dt, fd_grad
from scipy.stats import multivariate_normal

from fmref.paths import GaussianPath
from fmref.schedules import Linear

N, D = 6, 3
T_ROWS = np.linspace(0.05, 0.9, N)  # one time per row, t < 1 where β > 0


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.normal(size=(N, D)), 2.0 + g.normal(size=(N, D)), g.normal(size=(N, D))


@pytest.mark.parametrize("name", SCHEDULES)
def test_flow_time_derivative_is_conditional_field(backend: Any, name: str) -> None:
    path = GaussianPath(SCHEDULES[name])
    x0, z, _ = _data(1)
    bx0, bz = backend.asarray(x0), backend.asarray(z)

    def flow_at(s: float) -> np.ndarray:
        return backend.to_numpy(path.flow(bx0, bz, backend.asarray(T_ROWS + s)))

    d_flow = fd_dt(flow_at, 0.0, 1e-4)
    field = path.conditional_vector_field(
        backend.asarray(flow_at(0.0)), bz, backend.asarray(T_ROWS)
    )
    np.testing.assert_allclose(backend.to_numpy(field), d_flow, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_conditional_field_at_sample_equals_target(backend: Any, name: str) -> None:
    sched = SCHEDULES[name]
    path = GaussianPath(sched)
    _, z, eps = _data(2)
    bz, beps, bt = backend.asarray(z), backend.asarray(eps), backend.asarray(T_ROWS)
    x = path.sample(bz, bt, beps)
    sv = sched(T_ROWS)
    np.testing.assert_allclose(
        backend.to_numpy(x), sv.alpha[:, None] * z + sv.beta[:, None] * eps, rtol=1e-14, atol=1e-14
    )
    target = backend.to_numpy(path.target(bz, beps, bt))
    field = backend.to_numpy(path.conditional_vector_field(x, bz, bt))
    np.testing.assert_allclose(field, target, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        target, sv.alpha_dot[:, None] * z + sv.beta_dot[:, None] * eps, rtol=1e-13, atol=1e-13
    )


def test_linear_target_is_z_minus_eps(backend: Any) -> None:
    path = GaussianPath(Linear())
    _, z, eps = _data(3)
    for t in (0.0, 0.4, 1.0):  # Algorithm 4: the target does not depend on t
        got = backend.to_numpy(path.target(backend.asarray(z), backend.asarray(eps), t))
        np.testing.assert_allclose(got, z - eps, rtol=1e-15, atol=1e-15)
    x = backend.to_numpy(path.sample(backend.asarray(z), 0.25, backend.asarray(eps)))
    np.testing.assert_allclose(x, 0.25 * z + 0.75 * eps, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_conditional_log_prob_matches_scipy(backend: Any, name: str) -> None:
    sched = SCHEDULES[name]
    path = GaussianPath(sched)
    x, z, _ = _data(4)
    got = backend.to_numpy(
        path.conditional_log_prob(backend.asarray(x), backend.asarray(z), backend.asarray(T_ROWS))
    )
    sv = sched(T_ROWS)
    want = [
        multivariate_normal(sv.alpha[i] * z[i], sv.beta[i] ** 2 * np.eye(D)).logpdf(x[i])
        for i in range(N)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_conditional_score_is_gradient_of_log_prob(backend: Any, name: str) -> None:
    path = GaussianPath(SCHEDULES[name])
    x, z, _ = _data(5)
    bz, bt = backend.asarray(z), backend.asarray(T_ROWS)

    def logp(xs: np.ndarray) -> np.ndarray:
        reps = xs.shape[0] // N  # fd_grad stacks all stencil points, rows cycling fastest
        zz, tt = backend.asarray(np.tile(z, (reps, 1))), backend.asarray(np.tile(T_ROWS, reps))
        return backend.to_numpy(path.conditional_log_prob(backend.asarray(xs), zz, tt))

    got = backend.to_numpy(path.conditional_score(backend.asarray(x), bz, bt))
    # Smallest β here is β(0.9) ≈ 0.1 (SqrtBeta 0.32, LinearVP 0.44): h = 1e-3 resolves it.
    np.testing.assert_allclose(got, fd_grad(logp, x, 1e-3), rtol=1e-7, atol=1e-7)


def test_scalar_t_equals_constant_array_t(backend: Any) -> None:
    path = GaussianPath(SCHEDULES["cosine"])
    x, z, eps = _data(6)
    bx, bz, beps = backend.asarray(x), backend.asarray(z), backend.asarray(eps)
    t_arr = backend.asarray(np.full(N, 0.3))
    for f, args in (
        (path.flow, (bx, bz)),
        (path.conditional_vector_field, (bx, bz)),
        (path.conditional_score, (bx, bz)),
        (path.conditional_log_prob, (bx, bz)),
    ):
        np.testing.assert_allclose(
            backend.to_numpy(f(*args, 0.3)), backend.to_numpy(f(*args, t_arr)), rtol=0, atol=0
        )
    np.testing.assert_allclose(
        backend.to_numpy(path.sample(bz, 0.3, beps)),
        backend.to_numpy(path.sample(bz, t_arr, beps)),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("name", SCHEDULES)
def test_float32_close_to_float64(backend32: Any, name: str) -> None:
    path = GaussianPath(SCHEDULES[name])
    x, z, eps = _data(7)
    t32 = backend32.asarray(T_ROWS)
    x32, z32, e32 = (backend32.asarray(a) for a in (x, z, eps))
    pairs = [
        (path.conditional_vector_field(x32, z32, t32), path.conditional_vector_field(x, z, T_ROWS)),
        (path.conditional_score(x32, z32, t32), path.conditional_score(x, z, T_ROWS)),
        (path.conditional_log_prob(x32, z32, t32), path.conditional_log_prob(x, z, T_ROWS)),
        (path.target(z32, e32, t32), path.target(z, eps, T_ROWS)),
    ]
    for got, want in pairs:
        assert got.dtype == backend32.dtype
        scale = np.abs(want).max()
        np.testing.assert_allclose(backend32.to_numpy(got), want, rtol=1e-4, atol=1e-5 * scale)


# -- GaussianPath.draw: the one record of x_t and the CFM target ---------------------------
@pytest.mark.parametrize("name", SCHEDULES)
def test_draw_target_is_time_derivative_of_x(backend: Any, name: str) -> None:
    # d/dt x_t at fixed (z, ε) by central differences of the record's x (which uses α and β
    # only) against its target (which uses α̇ and β̇ only).
    path = GaussianPath(SCHEDULES[name])
    _, z, eps = _data(8)
    bz, beps = backend.asarray(z), backend.asarray(eps)

    def x_at(s: float) -> np.ndarray:
        return backend.to_numpy(path.draw(bz, backend.asarray(T_ROWS + s), eps=beps).x)

    d_x = fd_dt(x_at, 0.0, 1e-4)
    ps = path.draw(bz, backend.asarray(T_ROWS), eps=beps)
    target = backend.to_numpy(ps.target)
    np.testing.assert_allclose(target, d_x, rtol=1e-8, atol=1e-9)
    # The same comparison refuses a plausible wrong target: β̇ with the wrong sign.
    sv = SCHEDULES[name](T_ROWS)
    wrong = sv.alpha_dot[:, None] * z - sv.beta_dot[:, None] * eps
    assert not np.allclose(wrong, d_x, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_draw_target_is_conditional_field_at_x(backend: Any, name: str) -> None:
    path = GaussianPath(SCHEDULES[name])
    _, z, eps = _data(9)
    bz, bt = backend.asarray(z), backend.asarray(T_ROWS)
    ps = path.draw(bz, bt, eps=backend.asarray(eps))
    field = path.conditional_vector_field(ps.x, bz, bt)  # u_t(x|z), written in terms of x
    np.testing.assert_allclose(
        backend.to_numpy(ps.target), backend.to_numpy(field), rtol=1e-12, atol=1e-12
    )


def test_draw_moments_by_monte_carlo() -> None:
    # One z repeated: x_t ~ N(α_t z, β_t² I) and target ~ N(α̇_t z, β̇_t² I) over the drawn ε.
    sched, t, n = SCHEDULES["cosine"], 0.3, 40_000
    z = np.tile([[1.5, -2.0, 0.5]], (n, 1))
    ps = GaussianPath(sched).draw(z, t, rng=11)
    a, b = np.sin(np.pi * t / 2), np.cos(np.pi * t / 2)  # Cosine, by hand
    ad, bd = np.pi / 2 * b, -np.pi / 2 * a
    for arr, mean, sd in ((ps.x, a * z[0], b), (ps.target, ad * z[0], abs(bd))):
        np.testing.assert_allclose(arr.mean(0), mean, rtol=0, atol=5 * sd / np.sqrt(n))
        np.testing.assert_allclose(arr.std(0, ddof=1), sd, rtol=5 / np.sqrt(2 * n), atol=0)
        cov = np.cov(arr.T)
        off = cov[~np.eye(3, dtype=bool)]
        np.testing.assert_allclose(off, 0.0, rtol=0, atol=5 * sd * sd / np.sqrt(n))


def test_draw_rng_is_a_seed_or_generator_and_moves_to_z(backend32: Any) -> None:
    path = GaussianPath(SCHEDULES["linear"])
    _, z, _ = _data(10)
    want = np.random.default_rng(7).standard_normal(z.shape)
    for rng in (7, np.int64(7), np.random.default_rng(7)):
        np.testing.assert_array_equal(path.draw(z, T_ROWS, rng=rng).eps, want)
    ps = path.draw(backend32.asarray(z), 0.5, rng=7)
    assert ps.eps.dtype == backend32.dtype and ps.x.dtype == backend32.dtype
    np.testing.assert_allclose(backend32.to_numpy(ps.eps), want, rtol=1e-7, atol=1e-7)
    assert backend32.to_numpy(ps.t).shape == (N,)
    assert backend32.to_numpy(ps.schedule.alpha).shape == (N,)


def test_old_spellings_are_the_records_fields(backend: Any) -> None:
    # Identity by construction (sample, flow and target are thin wrappers over draw); kept to
    # pin 0.1's argument orders: sample(z, t, eps), flow(x0, z, t), target(z, eps, t).
    path = GaussianPath(SCHEDULES["sqrt_beta"])
    _, z, eps = _data(11)
    bz, beps, bt = backend.asarray(z), backend.asarray(eps), backend.asarray(T_ROWS)
    ps = path.draw(bz, bt, eps=beps)
    for got, want in (
        (path.sample(bz, bt, beps), ps.x),
        (path.flow(beps, bz, bt), ps.x),
        (path.target(bz, beps, bt), ps.target),
    ):
        np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))


def test_draw_record_is_frozen_and_target_refused_where_rates_are_infinite() -> None:
    path = GaussianPath(SCHEDULES["sqrt_beta"])  # β̇ infinite at t = 1
    z = np.ones((2, 2))
    ps = path.draw(z, np.array([0.5, 1.0]), eps=np.zeros((2, 2)))
    np.testing.assert_allclose(ps.x, [[0.5, 0.5], [1.0, 1.0]], rtol=1e-15, atol=0)  # x_1 = z
    with pytest.raises(ValueError, match=r"t: α̇_t or β̇_t is infinite"):
        _ = ps.target
    with pytest.raises(dataclasses.FrozenInstanceError):
        ps.x = z  # type: ignore[misc]


def test_draw_bad_input() -> None:
    path = GaussianPath(Linear())
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"eps.*rng"):
        path.draw(z, 0.5)
    with pytest.raises(ValueError, match=r"eps.*rng"):
        path.draw(z, 0.5, eps=z, rng=0)
    for bad in ("0", 1.5, True):
        with pytest.raises(TypeError, match="rng"):
            path.draw(z, 0.5, rng=bad)
    with pytest.raises(ValueError, match=r"\beps\b"):
        path.draw(z, 0.5, eps=np.zeros((2, 2)))
    with pytest.raises(TypeError, match=r"\beps\b"):
        path.draw(z, 0.5, eps=np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(TypeError, match=r"\bz\b"):
        path.draw(np.zeros((3, 2), dtype=np.int64), 0.5, rng=0)
    with pytest.raises(ValueError, match=r"\bz\b"):
        path.draw(np.zeros(3), 0.5, rng=0)
    with pytest.raises(ValueError, match=r"\bt\b"):
        path.draw(z, 1.5, eps=z)
    with pytest.raises(ValueError, match=r"\bt\b"):
        path.draw(z, np.full(4, 0.5), eps=z)
