"""assert_flow_likelihood_close: exact parts pass, and the usual likelihood slips are named.

For Gaussian data N(μ, Σ) on the Linear schedule the flow is affine, x1 = μ + Σ^{1/2} X_0
(S_0 = I, S_1 = Σ), so X_0 = Σ^{-1/2}(x1 − μ) and ∫_0^1 div u_t dt = log det Σ^{1/2}: a
textbook closed form, computed here with numpy's eigh and scipy's multivariate normal,
independent of fmref's backward ODE solve that the helper uses as its reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import fmref
from fmref.testing import assert_flow_likelihood_close

MU = np.array([0.7, -1.2])
SIGMA = np.array([[0.8, 0.3], [0.3, 0.5]])
MP = fmref.MarginalPath(fmref.GaussianMixture.gaussian(MU, SIGMA), fmref.Linear())
LOG_2PI = np.log(2 * np.pi)


def exact_parts(x1: np.ndarray, bug: str | None = None) -> tuple[Any, Any, Any]:
    """(log p_1, X_0, ∫ div u) in x1's dtype, from the closed form, with an optional slip."""
    lam, q = np.linalg.eigh(SIGMA)
    x = x1.astype(np.float64)
    x0 = (x - MU) @ q @ np.diag(lam**-0.5) @ q.T
    delta = np.full(x.shape[0], 0.5 * np.sum(np.log(lam)))
    norm = 0.5 * x.shape[1] * LOG_2PI
    log_p0 = -0.5 * np.sum(x0 * x0, axis=1) - norm
    if bug == "no_2pi":
        log_p0 = log_p0 + norm
    if bug == "two_2pi":
        log_p0 = log_p0 - norm
    if bug == "x0_off":
        x0 = x0 * 1.001
    log_p = log_p0 + delta if bug == "div_sign" else log_p0 - delta
    if bug == "delta_reported_negated":
        delta = -delta
    return tuple(a.astype(x1.dtype) for a in (log_p, x0, delta))  # type: ignore[return-value]


def test_closed_form_agrees_with_scipy() -> None:
    # The test's own reference, checked against a textbook density.
    x = np.random.default_rng(1).normal(size=(16, 2))
    np.testing.assert_allclose(
        exact_parts(x)[0], multivariate_normal(MU, SIGMA).logpdf(x), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_parts_pass(dtype: Any) -> None:
    assert_flow_likelihood_close(exact_parts, MP, like=np.zeros(1, dtype))


def test_log_prob_alone_and_a_mapping_pass() -> None:
    assert_flow_likelihood_close(lambda x: exact_parts(x)[0], MP)
    assert_flow_likelihood_close(
        lambda x: dict(zip(("log_prob", "x0", "delta"), exact_parts(x), strict=True)), MP
    )


@pytest.mark.slow
def test_fmref_likelihood_result_is_accepted_on_a_mixture() -> None:
    mp = fmref.MarginalPath(fmref.mixtures.random_mixture(2, 2, rng=3), fmref.Linear())
    assert_flow_likelihood_close(
        lambda x: fmref.log_likelihood(mp.vector_field, x, method="rk4", steps=64), mp, n=16
    )


def test_missing_normaliser_is_named() -> None:
    with pytest.raises(AssertionError, match=r"constant offset of d/2·log 2π = 1\.837877.*missing"):
        assert_flow_likelihood_close(lambda x: exact_parts(x, "no_2pi"), MP)


def test_doubled_normaliser_is_named() -> None:
    with pytest.raises(AssertionError, match="counted twice"):
        assert_flow_likelihood_close(lambda x: exact_parts(x, "two_2pi")[0], MP)


def test_sign_of_the_divergence_term_is_named() -> None:
    # log p only: the numbers show actual − expected = 2 ∫ div u.
    with pytest.raises(AssertionError, match="sign of the divergence term"):
        assert_flow_likelihood_close(lambda x: exact_parts(x, "div_sign")[0], MP)


def test_negated_delta_part_is_named() -> None:
    with pytest.raises(AssertionError, match=r"returned ∫ div u is −") as e:
        assert_flow_likelihood_close(lambda x: exact_parts(x, "delta_reported_negated"), MP)
    assert "[delta" in str(e.value) and "[log_prob]" not in str(e.value)


def test_wrong_x0_part_fails_alone() -> None:
    with pytest.raises(AssertionError, match=r"\[x0\]") as e:
        assert_flow_likelihood_close(lambda x: exact_parts(x, "x0_off"), MP)
    assert "[log_prob]" not in str(e.value)


def test_float32_default_refuses_a_t_to_1_clamp() -> None:
    # The likelihood of a solve started at t = 1 − 1e-3 is log p_{0.999}(x1), computed here in
    # closed form: p_t = N(t μ, t² Σ + (1 − t)² I).
    t = 1 - 1e-3

    def clamped(x: np.ndarray) -> np.ndarray:
        cov = t * t * SIGMA + (1 - t) ** 2 * np.eye(2)
        return multivariate_normal(t * MU, cov).logpdf(x.astype(np.float64)).astype(np.float32)

    with pytest.raises(AssertionError, match=r"\[log_prob\]"):
        assert_flow_likelihood_close(clamped, MP, like=np.zeros(1, np.float32))


def test_lower_precision_than_asked_fails() -> None:
    with pytest.raises(AssertionError, match="float32 for inputs of dtype float64"):
        assert_flow_likelihood_close(lambda x: exact_parts(x.astype(np.float32))[0], MP)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn"):
        assert_flow_likelihood_close(3, MP)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="marginal"):
        assert_flow_likelihood_close(exact_parts, MP.data)  # type: ignore[arg-type]
    dirac = fmref.MarginalPath(fmref.GaussianMixture.empirical(np.eye(2)), fmref.Linear())
    with pytest.raises(ValueError, match="positive definite"):
        assert_flow_likelihood_close(exact_parts, dirac)
    with pytest.raises(TypeError, match="sequence of 2 items"):
        assert_flow_likelihood_close(lambda x: exact_parts(x)[:2], MP)
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        assert_flow_likelihood_close(exact_parts, MP, x=np.zeros((3, 3)))
