"""GaussianPath: the conditional flow, vector field, score and density, checked independently."""

from __future__ import annotations

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
