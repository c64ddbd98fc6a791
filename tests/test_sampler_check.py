"""assert_sampler_close: passes correct samplers of every method, refuses each kind of slip.

The samplers here are written in the test from the textbook formulas (no fmref code): the
checker's reference is fmref.samplers.integrate, so their agreement is independent evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import fmref
from fmref.testing import assert_sampler_close, sampler_test_marginal


def make(method: str, bug: str | None = None) -> Any:
    """A user's NumPy sampler(field, x0, steps) with an optional slip."""

    def run(field: Any, x0: np.ndarray, steps: int) -> np.ndarray:
        x = x0.astype(np.float32) if bug == "float32" else x0
        n, h = x.shape[0], 1.0 / steps

        def f(y: np.ndarray, t: float) -> np.ndarray:
            tt = np.full(n, t, dtype=y.dtype)
            if bug == "ragged_t":
                tt = tt + np.linspace(0, 1e-3, n, dtype=y.dtype)
            return field(y, tt)

        for i in range(steps - 1 if bug == "n_minus_1" else steps):
            t = i * h
            if method == "euler":
                x = x + h * f(x, t)
            elif method == "heun":
                k1 = f(x, t)
                x = x + h / 2 * (k1 + f(x + h * k1, t + h))
            elif method == "midpoint":
                k1 = f(x, t)
                x = x + h * f(x + h / 2 * k1, t if bug == "mid_at_t" else t + h / 2)
            else:
                k1 = f(x, t)
                k2 = f(x + h / 2 * k1, t + h / 2)
                k3 = f(x + h / 2 * (k1 if bug == "k3_from_k1" else k2), t + h / 2)
                k4 = f(x + h * k3, t + h)
                w = (1, 1, 1, 1) if bug == "equal_weights" else (1, 2, 2, 1)
                x = x + h / sum(w) * (w[0] * k1 + w[1] * k2 + w[2] * k3 + w[3] * k4)
        return x.astype(np.float64) if bug == "float32" else x

    return run


METHODS = ("euler", "heun", "midpoint", "rk4")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_correct_samplers_pass_with_their_order(method: str, dtype: Any) -> None:
    assert_sampler_close(make(method), reference=method, like=np.zeros(1, dtype), order=True)


def test_default_marginal_has_unequal_weights_and_full_covariances() -> None:
    data = sampler_test_marginal().data
    assert np.ptp(data.weights) > 0.1
    off = data.full_covs()[:, 0, 1]
    assert np.count_nonzero(off) >= 2


def test_short_grid_is_named() -> None:
    with pytest.raises(AssertionError, match="does not reach t = 1") as e:
        assert_sampler_close(make("euler", "n_minus_1"), reference="euler", steps=8)
    assert "made 7 field calls" in str(e.value)
    assert "step 7, stage 0 at t = 0.875" in str(e.value)


def test_midpoint_stage_at_wrong_time_is_named() -> None:
    with pytest.raises(AssertionError, match=r"step 0, stage 1 at t = t_0 \+ 1/2·h = 0.0625"):
        assert_sampler_close(make("midpoint", "mid_at_t"), reference="midpoint", steps=8)


def test_method_other_than_reference_fails_on_the_calls() -> None:
    with pytest.raises(AssertionError, match=r"\[calls\]"):
        assert_sampler_close(make("euler"), reference="heun")


@pytest.mark.parametrize("bug", ["equal_weights", "k3_from_k1"])
def test_wrong_stage_combination_fails_on_x1(bug: str) -> None:
    with pytest.raises(AssertionError, match=r"\[x1, reference='rk4', steps=8\]"):
        assert_sampler_close(make("rk4", bug), reference="rk4")


def test_lower_precision_inside_the_sampler_is_named() -> None:
    with pytest.raises(AssertionError, match="dtype float32, x0 had float64"):
        assert_sampler_close(make("euler", "float32"), reference="euler")


def test_times_that_differ_across_rows_are_named() -> None:
    with pytest.raises(AssertionError, match="t differs across rows"):
        assert_sampler_close(make("euler", "ragged_t"), reference="euler")


def test_order_mode_refuses_a_first_order_rk4() -> None:
    # With x1's tolerance opened wide, only the order fit can see the slip: k3 from k1 makes
    # RK4 a second-order method.
    with pytest.raises(AssertionError, match=r"observed order of the global error is 1\.\d"):
        assert_sampler_close(make("rk4", "k3_from_k1"), reference="rk4", order=True, rtol=1, atol=1)


def test_order_mode_refuses_a_claimed_order_that_is_not_there() -> None:
    with pytest.raises(AssertionError, match="expected 2"):
        assert_sampler_close(make("euler"), reference="euler", order=2)


def test_order_mode_uses_a_single_gaussian_marginal_given() -> None:
    mp = fmref.MarginalPath(fmref.GaussianMixture.gaussian(np.array([2.0, -1.0]), 0.3), fmref.VP())
    assert_sampler_close(make("heun"), reference="heun", marginal=mp, order=True)


def test_field_scaled_by_the_sampler_fails() -> None:
    def scaled(field: Any, x0: np.ndarray, steps: int) -> np.ndarray:
        return make("euler")(lambda x, t: 1.01 * field(x, t), x0, steps)

    with pytest.raises(AssertionError, match=r"\[x1"):
        assert_sampler_close(scaled, reference="euler")


@pytest.mark.parametrize(
    ("kwargs", "exc", "text"),
    [
        ({"reference": "rk45"}, ValueError, "reference must be one of"),
        ({"reference": 4}, TypeError, "reference must be a str"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 2.5}, TypeError, "steps"),
        ({"marginal": "gmm"}, TypeError, "marginal must be an fmref MarginalPath"),
        ({"order": -1}, ValueError, "order"),
        ({"order": True, "order_steps": (4,)}, ValueError, "order_steps"),
        ({"n": 0}, ValueError, "n must be"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], exc: type, text: str) -> None:
    with pytest.raises(exc, match=text):
        assert_sampler_close(make("euler"), **kwargs)


def test_sampler_must_be_callable() -> None:
    with pytest.raises(TypeError, match="sampler"):
        assert_sampler_close("euler")  # type: ignore[arg-type]


def test_wrong_output_shape_is_named() -> None:
    with pytest.raises(AssertionError, match=r"returned ndarray of shape \(32,\)"):
        assert_sampler_close(lambda f, x0, s: x0[:, 0])


def test_time_off_the_protocol_is_named() -> None:
    def column_t(field: Any, x0: np.ndarray, steps: int) -> np.ndarray:
        return x0 + field(x0, np.zeros((x0.shape[0], 1)))

    with pytest.raises(
        AssertionError, match=r"t of shape \(32, 1\).*protocol is t of shape \(32,\)"
    ):
        assert_sampler_close(column_t, steps=1)
