"""Convention adapters: each formula checked by an independent route (FD, Tweedie, Monte Carlo)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fmref import VP, Cosine, GaussianMixture, GaussianPath, Linear, MarginalPath, Polynomial
from fmref.adapters import (
    as_flow_matching_model,
    flow_matching_schedule,
    from_flow_matching_sample,
    reverse_time,
    sigma_from_time,
    time_from_sigma,
    time_reversed,
    torchcfm_noise,
    torchcfm_schedule,
    ve_denoiser,
    ve_score,
)
from fmref.schedules import Custom, LinearVP

W = np.array([0.3, 0.7])
MU = np.array([[-1.5, 0.5], [1.0, -1.0]])
FULL = np.array([[[0.8, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 1.1]]])
DATA = GaussianMixture(W, MU, FULL)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), VP()], ids=repr)
def test_time_reversed_field_transports_the_reversed_density(schedule: Any) -> None:
    # q_τ = p_{1−τ} must satisfy ∂_τ log q + div v + v·∇log q = 0 for v = time_reversed(u);
    # every derivative here is a central difference, independent of the closed forms.
    mp = MarginalPath(DATA, schedule)
    v = time_reversed(mp.vector_field)
    x = mp.sample(6, 0.6, 0)
    tau, h = 0.4, 1e-5
    tq = np.full(6, 1 - tau)
    dlogq = (mp.log_prob(x, tq - h) - mp.log_prob(x, tq + h)) / (2 * h)
    taus = np.full(6, tau)
    div = sum(
        (v(x + h * e, taus)[:, i] - v(x - h * e, taus)[:, i]) / (2 * h)
        for i, e in enumerate(np.eye(2))
    )
    res = dlogq + div + np.sum(v(x, taus) * mp.score(x, tq), axis=1)
    np.testing.assert_allclose(res, 0.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(time_reversed(v)(x, taus), mp.vector_field(x, taus), rtol=0, atol=0)
    assert reverse_time(0.25) == 0.75


def test_ddpm_style_conditional_velocity_maps_to_the_cfm_target() -> None:
    # A data-at-0 path x_τ = α_{1−τ} z + β_{1−τ} ε; its velocity by central differences in τ.
    sched, rng = VP(), np.random.default_rng(0)
    z, eps = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    path = GaussianPath(sched)

    def x_of(tau: float) -> np.ndarray:
        return np.asarray(path.sample(z, 1 - tau, eps))

    def v(_x: Any, tau: np.ndarray) -> np.ndarray:
        h = 1e-6
        return (x_of(float(tau[0]) + h) - x_of(float(tau[0]) - h)) / (2 * h)

    u = time_reversed(v)
    t = np.full(5, 0.3)
    np.testing.assert_allclose(u(None, t), path.target(z, eps, t), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), VP(), Polynomial(2.0)], ids=repr)
def test_sigma_and_time_invert_each_other(schedule: Any) -> None:
    t = np.array([0.05, 0.3, 0.5, 0.9, 0.999])
    sig = np.asarray(sigma_from_time(schedule, t))
    assert np.all(np.diff(sig) < 0)
    np.testing.assert_allclose(time_from_sigma(schedule, sig), t, rtol=1e-12, atol=1e-12)
    assert float(time_from_sigma(schedule, 0.0)) == pytest.approx(1.0, rel=0, abs=1e-15)


def test_sigma_known_values() -> None:
    # σ = β/α = (1 − t)/t: 0.5/0.5 and 0.75/0.25.
    np.testing.assert_allclose(
        sigma_from_time(Linear(), np.array([0.5, 0.25])), [1.0, 3.0], rtol=1e-15, atol=0
    )
    assert float(time_from_sigma(Cosine(), 1.0)) == pytest.approx(0.5, rel=0, abs=1e-14)
    assert math.isinf(float(sigma_from_time(Linear(), np.array(0.0))))
    with pytest.raises(ValueError, match="sigma"):
        time_from_sigma(Linear(), -1.0)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), VP()], ids=repr)
@pytest.mark.parametrize("sigma", [0.1, 1.0, 7.0])
def test_ve_score_and_denoiser_match_the_smoothed_mixture(schedule: Any, sigma: float) -> None:
    # x_σ = z + σ ε has density Σ π_k N(μ_k, Σ_k + σ² I): an independent GaussianMixture.
    smoothed = GaussianMixture(W, MU, FULL + sigma**2 * np.eye(2))
    x = smoothed.sample(8, 1)
    mp = MarginalPath(DATA, schedule)
    want = smoothed.score(x)
    np.testing.assert_allclose(ve_score(mp, x, sigma), want, rtol=1e-9, atol=1e-10)
    # Tweedie: E[z | x_σ] = x_σ + σ² ∇log p_σ(x_σ).
    np.testing.assert_allclose(ve_denoiser(mp, x, sigma), x + sigma**2 * want, rtol=1e-8, atol=1e-9)
    with pytest.raises(ValueError, match="sigma"):
        ve_score(mp, x, 0.0)


def _named(name: str, **attrs: Any) -> Any:
    return type(name, (), attrs)()


def test_flow_matching_schedule_by_name() -> None:
    assert isinstance(flow_matching_schedule(_named("CondOTScheduler")), Linear)
    assert isinstance(flow_matching_schedule(_named("CosineScheduler")), Cosine)
    assert isinstance(flow_matching_schedule(_named("LinearVPScheduler")), LinearVP)
    assert flow_matching_schedule(_named("VPScheduler", beta_min=0.2, beta_max=10.0)) == VP(
        0.2, 10.0
    )
    assert flow_matching_schedule(_named("PolynomialConvexScheduler", n=3)) == Polynomial(3.0)
    with pytest.raises(ValueError, match="no fmref schedule"):
        flow_matching_schedule(_named("GeodesicScheduler"))


def test_flow_matching_sample_names_and_model_wrapper() -> None:
    s = SimpleNamespace(x_0="noise", x_1="data", x_t="xt", dx_t="dxt", t="t")
    assert from_flow_matching_sample(s) == {
        "z": "data",
        "eps": "noise",
        "x": "xt",
        "target": "dxt",
        "t": "t",
    }
    mp = MarginalPath(DATA, Cosine())
    model = as_flow_matching_model(mp.vector_field)
    x = mp.sample(4, 0.3, 0)
    # The wrapper broadcasts a 0-d t to (n,), so it must match the per-row-t call bit for bit
    # (a shared scalar t takes another, differently rounded route through the engine).
    np.testing.assert_array_equal(
        model(x=x, t=np.asarray(0.3)), mp.vector_field(x, np.full(4, 0.3))
    )


# torchcfm's matchers, re-typed from their documented formulas (x0 noise, x1 data, eps noise).
def cfm_xt(x0, x1, t, eps, sigma):  # ConditionalFlowMatcher
    return t[:, None] * x1 + (1 - t[:, None]) * x0 + sigma * eps


def cfm_ut(x0, x1, t):
    return x1 - x0


def vp_xt(x0, x1, t, eps, sigma):  # VariancePreservingConditionalFlowMatcher
    h = math.pi / 2
    return np.cos(h * t)[:, None] * x0 + np.sin(h * t)[:, None] * x1 + sigma * eps


def vp_ut(x0, x1, t):
    h = math.pi / 2
    return h * (np.cos(h * t)[:, None] * x1 - np.sin(h * t)[:, None] * x0)


MATCHERS = {"cfm": (cfm_xt, cfm_ut), "vp": (vp_xt, vp_ut)}


@pytest.mark.parametrize("matcher", ["cfm", "vp"])
def test_torchcfm_sigma_zero_maps_exactly(matcher: str) -> None:
    sched = torchcfm_schedule(matcher)
    assert isinstance(sched, Linear if matcher == "cfm" else Cosine)
    rng = np.random.default_rng(0)
    x0, x1, t = rng.standard_normal((9, 2)), rng.standard_normal((9, 2)), rng.random(9)
    path, (xt, ut) = GaussianPath(sched), MATCHERS[matcher]
    np.testing.assert_allclose(
        path.sample(x1, t, x0), xt(x0, x1, t, 0, 0.0), rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(path.target(x1, x0, t), ut(x0, x1, t), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(torchcfm_noise(matcher, x0, t), x0, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("matcher", ["cfm", "vp"])
def test_torchcfm_sigma_positive_gives_the_gaussian_path_in_mean(matcher: str) -> None:
    sigma, n, t0 = 0.4, 200_000, 0.35
    rng = np.random.default_rng(1)
    z = np.array([[1.0, -2.0]])
    x1 = np.repeat(z, n, axis=0)
    x0, eps = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    t = np.full(n, t0)
    sched = torchcfm_schedule(matcher, sigma)
    path, (xt_fn, ut_fn) = GaussianPath(sched), MATCHERS[matcher]
    xt = xt_fn(x0, x1, t, eps, sigma)
    e = torchcfm_noise(matcher, x0, t, eps, sigma)
    np.testing.assert_allclose(path.sample(x1, t, e), xt, rtol=1e-12, atol=1e-12)
    # ε is standard normal (mean 0, covariance I within 6 standard errors).
    assert np.abs(e.mean(0)).max() < 6 / np.sqrt(n)
    assert np.abs(np.cov(e.T) - np.eye(2)).max() < 6 * np.sqrt(2 / n)
    # Per sample the target is not α̇ z + β̇ ε ...
    ut = ut_fn(x0, x1, t)
    assert np.abs(ut - path.target(x1, e, t)).max() > 0.1
    # ... but its mean given (x_t, z) is u_t(x_t | z): the residual is orthogonal to 1 and x_t.
    r = ut - path.conditional_vector_field(xt, x1, t)
    feats = np.concatenate([np.ones((n, 1)), xt - xt.mean(0)], axis=1)
    moments = (feats[:, :, None] * r[:, None, :]).mean(0)
    se = np.sqrt(((feats[:, :, None] * r[:, None, :]) ** 2).mean(0) / n)
    assert np.all(np.abs(moments) < 6 * se)


def test_torchcfm_loss_minimiser_is_the_marginal_field() -> None:
    # Single-Gaussian data: u_t is affine in x, so a least-squares fit of torchcfm's target on
    # (1, x_t) over many draws converges to it.
    sigma, n, t0 = 0.3, 400_000, 0.6
    data = GaussianMixture.gaussian(np.array([2.0, -1.0]), np.array([0.5, 1.5]))
    rng = np.random.default_rng(2)
    x1, x0, eps = data.sample(n, rng), rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    t = np.full(n, t0)
    xt, ut = cfm_xt(x0, x1, t, eps, sigma), cfm_ut(x0, x1, t)
    design = np.concatenate([np.ones((n, 1)), xt], axis=1)
    coef, *_ = np.linalg.lstsq(design, ut, rcond=None)
    probe = np.array([[2.0, -1.0], [0.0, 0.0], [3.0, 1.0]])
    fitted = np.concatenate([np.ones((3, 1)), probe], axis=1) @ coef
    exact = MarginalPath(data, torchcfm_schedule("cfm", sigma)).vector_field(probe, t0)
    np.testing.assert_allclose(fitted, exact, rtol=0, atol=0.02)


def test_torchcfm_target_matcher_is_exact_per_sample() -> None:
    sigma = 0.05
    rng = np.random.default_rng(3)
    x1, eps, t = rng.standard_normal((7, 2)), rng.standard_normal((7, 2)), rng.random(7)
    xt = t[:, None] * x1 + (1 - (1 - sigma) * t)[:, None] * eps
    ut = (x1 - (1 - sigma) * xt) / (1 - (1 - sigma) * t)[:, None]
    path = GaussianPath(torchcfm_schedule("target", sigma))
    e = torchcfm_noise("target", None, t, eps, sigma)
    np.testing.assert_allclose(path.sample(x1, t, e), xt, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(path.conditional_vector_field(xt, x1, t), ut, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(path.target(x1, e, t), ut, rtol=1e-12, atol=1e-12)


def test_torchcfm_schedules_are_custom_with_checked_derivatives() -> None:
    for m in ("cfm", "vp", "target"):
        assert isinstance(torchcfm_schedule(m, 0.2), Custom)  # Custom checks α̇, β̇ by FD
    with pytest.raises(ValueError, match="matcher"):
        torchcfm_schedule("otcfm")
    with pytest.raises(ValueError, match="sigma"):
        torchcfm_schedule("cfm", -0.1)
