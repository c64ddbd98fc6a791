"""The continuity equation ∂_t p_t + div(p_t u_t) = 0: analytic and finite-difference residuals."""

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

from fmref.continuity import numerical_residual, residual
from fmref.marginals import MarginalPath
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
def test_analytic_residual_vanishes(
    backend: Any, case: Case, name: str, t: float, seed: int
) -> None:
    """∂_t log p + div u + u·∇log p ≤ 1e-9 relative to its terms, t ∈ [0, 1] with endpoints."""
    mp = MarginalPath(case.gm, SCHEDULES[name])
    a, b, _, _ = ab(SCHEDULES[name], t)
    g = np.random.default_rng(seed)
    x = a * case.gm.sample(6, g) + b * g.standard_normal((6, case.d))
    bx = backend.asarray(x)
    res = backend.to_numpy(residual(mp, bx, t))
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
    x = a * case.gm.sample(8, g) + b * g.standard_normal((8, 2))
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
    check = numerical_residual(mp, mp.vector_field, backend.asarray(x), t, h_t=1e-4)
    exact = mp.dlog_prob_dt(x, t) * np.exp(mp.log_prob(x, t))  # ∂_t p = p ∂_t log p
    assert np.abs(exact).max() > 1e-6  # a derivative to get right, not a vanishing one
    np.testing.assert_allclose(
        backend.to_numpy(check.dp_dt), exact, rtol=5e-5, atol=1e-6 * np.abs(exact).max()
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
def test_analytic_residual_float32(backend32: Any, t: float) -> None:
    case = make_case(23, 3, 3, "full")
    mp = MarginalPath(case.gm, SCHEDULES["linear"])
    x = backend32.asarray(np.random.default_rng(6).normal(size=(6, 3)))
    res = backend32.to_numpy(residual(mp, x, t))
    parts = mp.evaluate(
        backend32.to_numpy(x), t, ("dlog_prob_dt", "divergence", "vector_field", "score")
    )
    scale = (
        np.abs(parts["dlog_prob_dt"])
        + np.abs(parts["divergence"])
        + np.abs(np.sum(parts["vector_field"] * parts["score"], axis=1))
    )
    assert np.all(np.abs(res) <= 1e-4 * scale)
