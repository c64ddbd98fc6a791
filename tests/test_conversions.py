"""fmref.conversions: velocity, score, x̂ and ε̂ against a known (z, ε) pair and as round trips.

For a single data point z (Dirac data), X_t = α z + β ε determines everything: x̂ = z,
ε̂ = ε, the score is the conditional score −ε/β and the velocity is the CFM target α̇ z + β̇ ε.
Those come from GaussianPath (tested on its own), not from the conversion formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cases import SCHEDULES

from fmref import conversions as cv
from fmref.paths import GaussianPath

N, D = 7, 3
T_ROWS = np.linspace(0.05, 0.95, N)


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.normal(size=(N, D)) + 1.0, g.normal(size=(N, D))


@pytest.mark.parametrize("name", SCHEDULES)
def test_known_pair(backend: Any, name: str) -> None:
    sched = SCHEDULES[name]
    path = GaussianPath(sched)
    z, eps = _pair(1)
    bz, beps, bt = backend.asarray(z), backend.asarray(eps), backend.asarray(T_ROWS)
    x = path.sample(bz, bt, beps)
    score = path.conditional_score(x, bz, bt)
    velocity = path.target(bz, beps, bt)
    known = {"x_hat": bz, "eps_hat": beps, "score": score, "velocity": velocity}
    routes = {
        "eps_hat": [
            cv.eps_hat_from_x_hat(sched, x, bt, bz),
            cv.eps_hat_from_score(sched, x, bt, score),
        ],
        "x_hat": [
            cv.x_hat_from_eps_hat(sched, x, bt, beps),
            cv.x_hat_from_velocity(sched, x, bt, velocity),
        ],
        "score": [
            cv.score_from_eps_hat(sched, x, bt, beps),
            cv.score_from_velocity(sched, x, bt, velocity),
        ],
        "velocity": [
            cv.velocity_from_x_hat(sched, x, bt, bz),
            cv.velocity_from_score(sched, x, bt, score),
        ],
    }
    for key, gots in routes.items():
        want = backend.to_numpy(known[key])
        for got in gots:
            np.testing.assert_allclose(
                backend.to_numpy(got),
                want,
                rtol=1e-10,
                atol=1e-10 * (1 + np.abs(want).max()),
                err_msg=key,
            )


@pytest.mark.parametrize("name", SCHEDULES)
def test_round_trips_on_arbitrary_predictions(backend: Any, name: str) -> None:
    """Any prediction, consistent or not, survives a conversion and its inverse."""
    sched = SCHEDULES[name]
    g = np.random.default_rng(2)
    x, p = backend.asarray(g.normal(size=(N, D))), backend.asarray(g.normal(size=(N, D)))
    t = backend.asarray(T_ROWS)
    pairs = [
        (cv.eps_hat_from_x_hat, cv.x_hat_from_eps_hat),
        (cv.x_hat_from_eps_hat, cv.eps_hat_from_x_hat),
        (cv.score_from_eps_hat, cv.eps_hat_from_score),
        (cv.eps_hat_from_score, cv.score_from_eps_hat),
        (cv.velocity_from_x_hat, cv.x_hat_from_velocity),
        (cv.x_hat_from_velocity, cv.velocity_from_x_hat),
        (cv.velocity_from_score, cv.score_from_velocity),
        (cv.score_from_velocity, cv.velocity_from_score),
    ]
    want = backend.to_numpy(p)
    for there, back in pairs:
        got = backend.to_numpy(back(sched, x, t, there(sched, x, t, p)))
        # 1/α near t = 0.05 (VP: α ≈ 8e-3) amplifies rounding by ~1e2.
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11, err_msg=there.__name__)


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_endpoints_refused(backend: Any, t: float) -> None:
    x = backend.asarray(np.ones((2, 2)))
    for f in (cv.score_from_eps_hat, cv.velocity_from_x_hat, cv.x_hat_from_velocity):
        with pytest.raises(ValueError, match=r"\bt\b"):
            f(SCHEDULES["linear"], x, t, x)


@pytest.mark.parametrize("name", SCHEDULES)
def test_float32(backend32: Any, name: str) -> None:
    sched = SCHEDULES[name]
    z, eps = _pair(3)
    sv = sched(T_ROWS)
    x = sv.alpha[:, None] * z + sv.beta[:, None] * eps
    args = (backend32.asarray(x), backend32.asarray(T_ROWS))
    got = cv.velocity_from_x_hat(sched, *args, backend32.asarray(z))
    assert got.dtype == backend32.dtype
    want = sv.alpha_dot[:, None] * z + sv.beta_dot[:, None] * eps
    np.testing.assert_allclose(
        backend32.to_numpy(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max()
    )
    s = cv.score_from_eps_hat(sched, *args, backend32.asarray(eps))
    np.testing.assert_allclose(backend32.to_numpy(s), -eps / sv.beta[:, None], rtol=1e-5, atol=1e-5)


def test_prediction_must_share_x_namespace(backend: Any) -> None:
    z, eps = _pair(5)
    sched = SCHEDULES["linear"]
    x = 0.5 * z + 0.5 * eps
    if backend.name == "numpy":
        # A list is validated into an array of x's namespace and used as such.
        got = cv.eps_hat_from_x_hat(sched, x, 0.5, z.tolist())
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, eps, rtol=1e-12, atol=1e-12)
    else:
        with pytest.raises(TypeError, match="x_hat must be an array of x's namespace"):
            cv.eps_hat_from_x_hat(sched, backend.asarray(x), 0.5, z)
