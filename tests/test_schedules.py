"""Schedules: values against the defining formulas, derivatives against finite differences."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
from _reference import fd_dt

from fmref.schedules import VP, Cosine, Custom, Linear, LinearVP, Polynomial, Schedule, SqrtBeta

# The defining (α_t, β_t) of each schedule, written from the table in docs/theory.md §1 and
# flow_matching's VPScheduler; derivatives are never written here, only differenced.
_B, _b = 20.0, 0.1


def _vp_alpha(t: np.ndarray) -> np.ndarray:
    big_t = 0.5 * (1 - t) ** 2 * (_B - _b) + (1 - t) * _b
    return np.exp(-0.5 * big_t)


DEFINITIONS: dict[str, tuple[Schedule, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "linear": (Linear(), lambda t: t, lambda t: 1 - t),
    "cosine": (Cosine(), lambda t: np.sin(np.pi * t / 2), lambda t: np.cos(np.pi * t / 2)),
    "poly2": (Polynomial(2.0), lambda t: t**2, lambda t: 1 - t**2),
    "poly0.5": (Polynomial(0.5), lambda t: t**0.5, lambda t: 1 - t**0.5),
    "poly1": (Polynomial(1.0), lambda t: t, lambda t: 1 - t),
    "linear_vp": (LinearVP(), lambda t: t, lambda t: np.sqrt(1 - t**2)),
    "vp": (VP(), _vp_alpha, lambda t: np.sqrt(1 - _vp_alpha(t) ** 2)),
    "sqrt_beta": (SqrtBeta(), lambda t: t, lambda t: np.sqrt(1 - t)),
}
NAMES = list(DEFINITIONS)
GRID = np.linspace(0.05, 0.95, 19)


def _np(backend: Any, a: Any) -> np.ndarray:
    return backend.to_numpy(a)


@pytest.mark.parametrize("name", NAMES)
def test_values_match_definition(backend: Any, name: str) -> None:
    sched, alpha, beta = DEFINITIONS[name]
    grid = np.linspace(0.0, 1.0, 41)
    sv = sched(backend.asarray(grid))
    np.testing.assert_allclose(_np(backend, sv.alpha), alpha(grid), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(_np(backend, sv.beta), beta(grid), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_derivatives_match_central_differences(backend: Any, name: str) -> None:
    sched = DEFINITIONS[name][0]
    h = 1e-3

    # Difference the schedule's own α, β, ½β² in the time offset s around each grid point.
    d_alpha = fd_dt(lambda s: _np(backend, sched(backend.asarray(GRID + s)).alpha), 0.0, h)
    d_beta = fd_dt(lambda s: _np(backend, sched(backend.asarray(GRID + s)).beta), 0.0, h)
    d_half_b2 = fd_dt(
        lambda s: 0.5 * _np(backend, sched(backend.asarray(GRID + s)).beta) ** 2, 0.0, h
    )
    sv = sched(backend.asarray(GRID))
    np.testing.assert_allclose(_np(backend, sv.alpha_dot), d_alpha, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(_np(backend, sv.beta_dot), d_beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(_np(backend, sv.beta_beta_dot), d_half_b2, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "vp"])
def test_endpoints_exact(backend: Any, name: str) -> None:
    sv = DEFINITIONS[name][0](backend.asarray([0.0, 1.0]))
    # Exact: fmref decides validity at t = 1 by β_1 > 0, so β_1 must be exactly zero.
    assert _np(backend, sv.alpha).tolist() == [0.0, 1.0]
    assert _np(backend, sv.beta).tolist() == [1.0, 0.0]


def test_vp_endpoints_are_approximate(backend: Any) -> None:
    sched = VP(b=_b, B=_B)
    sv = sched(backend.asarray([0.0, 1.0]))
    a0 = math.exp(-(_b + _B) / 4)  # ≈ 6.6e-3: VP never reaches pure noise
    np.testing.assert_allclose(_np(backend, sv.alpha), [a0, 1.0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(
        _np(backend, sv.beta), [math.sqrt(1 - a0**2), 0.0], rtol=1e-14, atol=0
    )
    assert 6.5e-3 < a0 < 6.6e-3


@pytest.mark.parametrize(
    ("name", "bbd_at_one"), [("linear_vp", -1.0), ("sqrt_beta", -0.5), ("vp", -_b / 2)]
)
def test_singular_schedules_keep_beta_beta_dot_finite(
    backend: Any, name: str, bbd_at_one: float
) -> None:
    sched = DEFINITIONS[name][0]
    sv = sched(backend.asarray([1.0]))
    assert sched.singular_at_one
    assert _np(backend, sv.beta_dot)[0] == -np.inf
    # Second-order one-sided difference of ½β² at t = 1, independent of the closed form.
    h = 1e-5
    f = lambda s: 0.5 * _np(backend, sched(backend.asarray([s])).beta)[0] ** 2  # noqa: E731
    one_sided = (3 * f(1.0) - 4 * f(1.0 - h) + f(1.0 - 2 * h)) / (2 * h)
    np.testing.assert_allclose(one_sided, bbd_at_one, rtol=1e-6, atol=0)
    np.testing.assert_allclose(_np(backend, sv.beta_beta_dot)[0], bbd_at_one, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_and_array_t_agree(name: str) -> None:
    sched = DEFINITIONS[name][0]
    arr = sched(GRID)
    for i, t in enumerate(GRID):
        sv = sched(float(t))
        for field in ("alpha", "beta", "alpha_dot", "beta_dot", "beta_beta_dot"):
            value = np.asarray(getattr(sv, field))
            assert value.shape == ()
            np.testing.assert_allclose(value, getattr(arr, field)[i], rtol=1e-15, atol=0)


# -- Custom --------------------------------------------------------------------------------
def _smooth(t: Any) -> Any:
    return 3 * t * t - 2 * t * t * t


def _smooth_dot(t: Any) -> Any:
    return 6 * t - 6 * t * t


def _sin_alpha(t: Any) -> Any:
    return array_api_compat.array_namespace(t).sin(math.pi / 2 * t)


def _cos_beta(t: Any) -> Any:
    return array_api_compat.array_namespace(t).cos(math.pi / 2 * t)


def test_custom_with_supplied_derivatives(backend: Any) -> None:
    sched = Custom(_smooth, lambda t: 1 - _smooth(t), _smooth_dot, lambda t: -_smooth_dot(t))
    grid = np.linspace(0.0, 1.0, 21)
    sv = sched(backend.asarray(grid))
    a, ad = 3 * grid**2 - 2 * grid**3, 6 * grid - 6 * grid**2
    np.testing.assert_allclose(_np(backend, sv.alpha), a, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(_np(backend, sv.alpha_dot), ad, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(_np(backend, sv.beta_dot), -ad, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(
        _np(backend, sv.beta_beta_dot), -(1 - a) * ad, rtol=1e-14, atol=1e-15
    )


def test_custom_missing_derivatives_are_numerical(backend: Any) -> None:
    sched = Custom(_sin_alpha, _cos_beta)
    # Endpoints and times within the step h = 1e-5 of them use the one-sided stencil, which
    # must sit at t: anchored at 0 or 1, β̇(5e-6) and α̇(1 − 5e-6) ≈ ∓1.2e-5 would come out 0.
    grid = np.concatenate([[0.0, 5e-6], np.linspace(0.05, 0.95, 19), [1 - 5e-6, 1.0]])
    sv = sched(backend.asarray(grid))
    h = math.pi / 2
    np.testing.assert_allclose(_np(backend, sv.alpha_dot), h * np.cos(h * grid), rtol=0, atol=1e-8)
    np.testing.assert_allclose(_np(backend, sv.beta_dot), -h * np.sin(h * grid), rtol=0, atol=1e-8)
    np.testing.assert_allclose(
        _np(backend, sv.beta_beta_dot), -h * np.sin(h * grid) * np.cos(h * grid), rtol=0, atol=1e-8
    )


@pytest.mark.parametrize(
    ("alpha_dot", "beta_dot", "which"),
    [
        (lambda t: 6 * t, None, "alpha_dot"),  # wrong formula
        (lambda t: 1.001 * _smooth_dot(t), None, "alpha_dot"),  # 0.1 % off
        (_smooth_dot, lambda t: _smooth_dot(t), "beta_dot"),  # sign error
    ],
)
def test_custom_refuses_wrong_supplied_derivative(
    alpha_dot: Callable[[Any], Any], beta_dot: Any, which: str
) -> None:
    with pytest.raises(ValueError, match=which):
        Custom(_smooth, lambda t: 1 - _smooth(t), alpha_dot, beta_dot)


@pytest.mark.parametrize("name", NAMES)
def test_float32_close_to_float64(backend32: Any, name: str) -> None:
    sched = DEFINITIONS[name][0]
    sv32 = sched(backend32.asarray(GRID))
    sv64 = sched(GRID)
    assert sv32.alpha.dtype == backend32.dtype
    for field in ("alpha", "beta", "alpha_dot", "beta_dot", "beta_beta_dot"):
        np.testing.assert_allclose(
            backend32.to_numpy(getattr(sv32, field)), getattr(sv64, field), rtol=2e-5, atol=2e-6
        )


def test_custom_infinite_beta_dot_keeps_beta_beta_dot_finite(backend: Any) -> None:
    # √(1 − t) with its exact β̇ = −1/(2√(1 − t)), infinite at t = 1: ββ̇ = ½ d(1 − t)/dt = −½.
    def beta(t: Any) -> Any:
        return array_api_compat.array_namespace(t).sqrt(1 - t)

    def beta_dot(t: Any) -> Any:
        return -0.5 / array_api_compat.array_namespace(t).sqrt(1 - t)

    with np.errstate(divide="ignore"):
        sv = Custom(lambda t: t, beta, lambda t: 0 * t + 1, beta_dot)(backend.asarray([0.5, 1.0]))
    assert _np(backend, sv.beta_dot)[1] == -np.inf
    np.testing.assert_allclose(_np(backend, sv.beta_beta_dot), [-0.5, -0.5], rtol=1e-8, atol=0)


@pytest.mark.parametrize(
    ("alpha", "beta", "match"),
    [
        (lambda t: t * math.nan, lambda t: 1 - t, "alpha returned non-finite"),
        (lambda t: t, lambda t: 0.5 - t, "β_t >= 0"),
        (lambda t: t, lambda t: 1.0, "beta must return an array shaped like t"),
    ],
)
def test_custom_refuses_bad_values(alpha: Any, beta: Any, match: str) -> None:
    sched = Custom(alpha, beta)
    with pytest.raises(ValueError, match=match):
        sched(np.linspace(0.0, 1.0, 5))


def test_custom_refuses_outputs_of_another_namespace(backend: Any) -> None:
    sched = Custom(lambda t: np.linspace(0.0, 1.0, 3), lambda t: 1 - t)
    t = backend.asarray(np.linspace(0.0, 1.0, 3))
    if backend.name == "numpy":
        np.testing.assert_array_equal(sched(t).alpha, np.linspace(0.0, 1.0, 3))
    else:
        with pytest.raises(TypeError, match="alpha must return an array of t's namespace"):
            sched(t)
