"""Convention adapters: each formula checked by an independent route (FD, Tweedie, Monte Carlo)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fmref import VP, Cosine, GaussianMixture, GaussianPath, Linear, MarginalPath, Polynomial
from fmref.adapters import (
    as_diffusers_model,
    as_flow_matching_model,
    ddpm_schedule,
    ddpm_time,
    diffusers_flow_match_grid,
    diffusers_mu,
    diffusers_sigma_from_time,
    diffusers_timestep,
    edm_sigma_from_time,
    flow_matching_schedule,
    from_ddpm_model,
    from_diffusers_model,
    from_diffusers_scheduler,
    from_flow_matching_sample,
    reverse_time,
    sigma_from_time,
    time_from_diffusers_sigma,
    time_from_edm_sigma,
    time_from_sigma,
    time_reversed,
    torchcfm_noise,
    torchcfm_schedule,
    ve_denoiser,
    ve_score,
)
from fmref.schedules import Custom, LinearVP, SqrtBeta

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
    x = mp.sample(6, 0.6, rng=0)
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
    sig = np.asarray(edm_sigma_from_time(schedule, t))
    assert np.all(np.diff(sig) < 0)
    np.testing.assert_allclose(time_from_edm_sigma(schedule, sig), t, rtol=1e-12, atol=1e-12)
    assert float(time_from_edm_sigma(schedule, 0.0)) == pytest.approx(1.0, rel=0, abs=1e-15)


def test_sigma_known_values() -> None:
    # σ = β/α = (1 − t)/t: 0.5/0.5 and 0.75/0.25.
    np.testing.assert_allclose(
        edm_sigma_from_time(Linear(), np.array([0.5, 0.25])), [1.0, 3.0], rtol=1e-15, atol=0
    )
    assert float(time_from_edm_sigma(Cosine(), 1.0)) == pytest.approx(0.5, rel=0, abs=1e-14)
    assert math.isinf(float(edm_sigma_from_time(Linear(), np.array(0.0))))
    with pytest.raises(ValueError, match="sigma"):
        time_from_edm_sigma(Linear(), -1.0)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), VP()], ids=repr)
@pytest.mark.parametrize("sigma", [0.1, 1.0, 7.0])
def test_ve_score_and_denoiser_match_the_smoothed_mixture(schedule: Any, sigma: float) -> None:
    # x_σ = z + σ ε has density Σ π_k N(μ_k, Σ_k + σ² I): an independent GaussianMixture.
    smoothed = GaussianMixture(W, MU, FULL + sigma**2 * np.eye(2))
    x = smoothed.sample(8, rng=1)
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
    x = mp.sample(4, 0.3, rng=0)
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
    x1, x0, eps = data.sample(n, rng=rng), rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
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


# -- the two σ ---------------------------------------------------------------------------------


def test_edm_and_diffusers_sigma_are_different_quantities() -> None:
    # Linear at t = 0.25: x = 0.25 z + 0.75 ε. EDM's σ divides by α (x/α = z + 3 ε); diffusers'
    # σ is the noise coefficient itself.
    assert float(edm_sigma_from_time(Linear(), np.array(0.25))) == pytest.approx(3.0, abs=1e-15)
    assert diffusers_sigma_from_time(0.25) == 0.75
    assert time_from_diffusers_sigma(0.75) == 0.25
    assert diffusers_timestep(0.25) == pytest.approx(750.0, rel=0, abs=1e-12)


@pytest.mark.parametrize(
    ("old", "args"), [(sigma_from_time, (Linear(), 0.25)), (time_from_sigma, (Linear(), 3.0))]
)
def test_old_sigma_names_warn_and_name_the_convention(old: Any, args: tuple[Any, ...]) -> None:
    with pytest.warns(DeprecationWarning, match="EDM") as rec:
        got = float(old(*args))
    assert "diffusers" in str(rec[0].message)
    want = 3.0 if old is sigma_from_time else 0.25
    assert got == pytest.approx(want, rel=0, abs=1e-12)


# -- diffusers flow-match schedulers -------------------------------------------------------------


def _odds(sigma: np.ndarray) -> np.ndarray:
    return sigma / (1 - sigma)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_grid_shift_scales_the_noise_odds(shift: float) -> None:
    # Independent characterisation of diffusers' shift: it multiplies σ/(1 − σ) by s.
    base = diffusers_flow_match_grid(10, shift=1.0)
    g = diffusers_flow_match_grid(10, shift=shift)
    s_min = 1 / 1000 * shift / (1 + (shift - 1) / 1000)
    raw = np.linspace(1.0, s_min, 10)  # the scheduler's own ends, shifted once at init
    np.testing.assert_allclose(_odds(g.sigmas[1:-1]), shift * _odds(raw[1:]), rtol=1e-12, atol=0)
    assert g.sigmas[0] == 1.0
    np.testing.assert_allclose(g.t, 1 - g.sigmas, rtol=0, atol=0)
    assert g.t[0] == 0.0 and g.t[-1] == 1.0 and np.all(np.diff(g.t) > 0)
    np.testing.assert_allclose(g.timesteps, 1000 * g.sigmas[:-1], rtol=1e-15, atol=0)
    assert base.sigmas.shape == (11,)


def test_flow_match_grid_dynamic_shift_is_a_shift_by_exp_mu() -> None:
    mu = 0.7
    dyn = diffusers_flow_match_grid(8, mu=mu)
    raw = np.linspace(1.0, 1 / 1000, 8)  # unshifted ends under dynamic shifting
    np.testing.assert_allclose(_odds(dyn.sigmas[1:-1]), math.exp(mu) * _odds(raw[1:]), rtol=1e-12)
    lin = diffusers_flow_match_grid(8, mu=2.0, time_shift_type="linear")
    np.testing.assert_allclose(_odds(lin.sigmas[1:-1]), 2.0 * _odds(raw[1:]), rtol=1e-12)
    assert diffusers_mu(256) == pytest.approx(0.5, abs=1e-15)
    assert diffusers_mu(4096) == pytest.approx(1.15, abs=1e-15)
    with pytest.raises(ValueError, match="not both"):
        diffusers_flow_match_grid(8, shift=3.0, mu=0.5)


def test_flow_match_grid_karras_and_exponential_spacings() -> None:
    lin = diffusers_flow_match_grid(12, shift=3.0)
    kar = diffusers_flow_match_grid(12, shift=3.0, spacing="karras")
    exp = diffusers_flow_match_grid(12, shift=3.0, spacing="exponential")
    for g in (kar, exp):  # same ends as the shifted linear grid
        np.testing.assert_allclose(g.sigmas[[0, -2]], lin.sigmas[[0, -2]], rtol=1e-12, atol=0)
    # Karras: σ^(1/7) is equally spaced; exponential: log σ is.
    assert np.ptp(np.diff(kar.sigmas[:-1] ** (1 / 7))) < 1e-12
    assert np.ptp(np.diff(np.log(exp.sigmas[:-1]))) < 1e-12
    with pytest.raises(ValueError, match="spacing"):
        diffusers_flow_match_grid(12, spacing="beta")


DIFFUSERS_CONFIGS = [
    ({}, {}, {}),
    ({"shift": 3.0}, {}, {"shift": 3.0}),
    ({"use_dynamic_shifting": True}, {"mu": 0.8}, {"mu": 0.8}),
    (
        {"use_dynamic_shifting": True, "time_shift_type": "linear"},
        {"mu": 2.0},
        {"mu": 2.0, "time_shift_type": "linear"},
    ),
    ({"shift": 3.0, "use_karras_sigmas": True}, {}, {"shift": 3.0, "spacing": "karras"}),
    ({"shift": 2.0, "use_exponential_sigmas": True}, {}, {"shift": 2.0, "spacing": "exponential"}),
    ({"shift": 3.0, "shift_terminal": 0.1}, {}, {"shift": 3.0, "shift_terminal": 0.1}),
]


@pytest.mark.parametrize(("config", "call", "ours"), DIFFUSERS_CONFIGS)
def test_flow_match_grid_matches_diffusers(config: Any, call: Any, ours: Any) -> None:
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    sch.set_timesteps(13, **call)
    lib = from_diffusers_scheduler(sch)
    mine = diffusers_flow_match_grid(13, **ours)
    # diffusers computes in float32: agreement to its rounding (σ ≤ 1, timesteps ≤ 1000).
    np.testing.assert_allclose(mine.sigmas, lib.sigmas, rtol=0, atol=1e-7)
    np.testing.assert_allclose(mine.t, lib.t, rtol=0, atol=1e-7)
    np.testing.assert_allclose(mine.timesteps, lib.timesteps, rtol=0, atol=1e-4)


def test_diffusers_forward_process_and_target_sign() -> None:
    # scale_noise(z, ts, ε) = σ ε + (1 − σ) z is fmref's Linear path at t = 1 − σ; the SD3
    # target is its σ-derivative (central differences here), and from_diffusers_model turns it
    # into fmref's target z − ε.
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    sch = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sch.set_timesteps(10)
    rng = np.random.default_rng(4)
    z, eps = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    ts = sch.timesteps[3]
    got = sch.scale_noise(torch.tensor(z), ts.reshape(1), torch.tensor(eps)).numpy()
    t = float(time_from_diffusers_sigma(sch.sigmas[3].double()))
    path = GaussianPath(Linear())
    np.testing.assert_allclose(got, path.sample(z, t, eps), rtol=0, atol=1e-12)

    def sd3_model(_x: Any, timestep: np.ndarray) -> np.ndarray:
        sig, h = float(timestep[0]) / 1000, 1e-6
        return ((1 - sig - h) * z + (sig + h) * eps - (1 - sig + h) * z - (sig - h) * eps) / (2 * h)

    u = from_diffusers_model(sd3_model)
    np.testing.assert_allclose(u(None, np.full(5, t)), path.target(z, eps, t), rtol=0, atol=1e-8)


def _scheduler_euler(sch: Any, model: Any, x: Any) -> Any:
    for ts in sch.timesteps:
        x = sch.step(model(x, ts), ts, x).prev_sample
    return x


def test_documented_flow_match_euler_step_is_fmrefs_euler() -> None:
    # Without diffusers: its documented step prev = x + (σ_{i+1} − σ_i) · model(x, N σ_i), with
    # the SD3-convention model, must be fmref's Euler on t = 1 − σ.
    from fmref.samplers import integrate

    mp = MarginalPath(DATA, Linear())
    grid = diffusers_flow_match_grid(20, shift=3.0)
    model = as_diffusers_model(mp.vector_field)
    x0 = np.random.default_rng(5).standard_normal((32, 2))
    x = x0
    for i, ts in enumerate(grid.timesteps):
        x = x + (grid.sigmas[i + 1] - grid.sigmas[i]) * model(x, ts)
    ours = integrate(mp.vector_field, x0, method="euler", grid=grid.t).x
    np.testing.assert_allclose(x, ours, rtol=1e-12, atol=1e-12)
    wrong = from_diffusers_model(lambda y, ts: mp.vector_field(y, 1 - ts / 1000))  # no flip
    assert np.abs(wrong(x0, np.full(32, 0.5)) + mp.vector_field(x0, 0.5)).max() < 1e-12


@pytest.mark.parametrize("config", [{"shift": 3.0}, {"use_karras_sigmas": True, "shift": 2.0}])
def test_euler_through_diffusers_scheduler_is_fmrefs_euler(config: Any) -> None:
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from fmref.samplers import integrate

    mp = MarginalPath(DATA, Linear())
    sch = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    sch.set_timesteps(25)
    grid = from_diffusers_scheduler(sch)
    x0 = np.random.default_rng(5).standard_normal((64, 2))
    ours = integrate(mp.vector_field, x0, method="euler", grid=grid.t).x
    model = as_diffusers_model(mp.vector_field)
    theirs = _scheduler_euler(sch, model, torch.tensor(x0)).double().numpy()
    # The scheduler steps in float32: agreement to float32 rounding over 25 steps.
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=2e-5)
    # Without the sign flip (fmref's u handed to diffusers as is) the samples go elsewhere.
    sch.set_timesteps(25)
    wrong = _scheduler_euler(sch, lambda x, ts: -model(x, ts), torch.tensor(x0)).double().numpy()
    assert np.abs(wrong - ours).max() > 1.0


# -- DDPM / DDIM: discrete alphas_cumprod --------------------------------------------------------

# DDPM's linear β schedule (Ho et al. 2020), typed from the paper: β_i from 1e-4 to 0.02.
DDPM_ALPHAS_CUMPROD = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))


def test_ddpm_schedule_nodes_are_the_discrete_alphas() -> None:
    sched = ddpm_schedule(DDPM_ALPHAS_CUMPROD)
    i = np.array([0, 1, 17, 500, 998, 999])
    sv = sched(ddpm_time(i))
    np.testing.assert_allclose(sv.alpha, np.sqrt(DDPM_ALPHAS_CUMPROD[i]), rtol=1e-13, atol=0)
    np.testing.assert_allclose(sv.beta, np.sqrt(1 - DDPM_ALPHAS_CUMPROD[i]), rtol=1e-11, atol=0)
    ends = sched(np.array([0.0, 1.0]))
    assert ends.alpha[1] == 1.0 and ends.beta[1] == 0.0
    assert ends.beta_dot[1] == -math.inf and math.isfinite(ends.beta_beta_dot[1])
    assert float(ddpm_time(999)) == 0.0


def test_ddpm_schedule_derivatives_by_finite_differences() -> None:
    sched = ddpm_schedule(DDPM_ALPHAS_CUMPROD)
    t = np.random.default_rng(6).uniform(0.01, 0.99, 40)
    h = 1e-6
    sv, up, dn = sched(t), sched(t + h), sched(t - h)
    np.testing.assert_allclose(sv.alpha_dot, (up.alpha - dn.alpha) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sv.beta_dot, (up.beta - dn.beta) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sv.alpha**2 + sv.beta**2, 1.0, rtol=0, atol=1e-14)
    # ββ̇ at t = 1 by a one-sided difference of ½β² (β̇ itself is infinite there).
    one = sched(np.array([1.0]))
    half_b2 = lambda s: 0.5 * sched(np.array([s])).beta[0] ** 2  # noqa: E731
    fd = (3 * half_b2(1.0) - 4 * half_b2(1 - 1e-5) + half_b2(1 - 2e-5)) / 2e-5
    # The second-order one-sided difference carries its own O(h²) error: it moves by 7e-5
    # relative between h = 3e-5 and 1e-5, so it pins ββ̇(1) to ~1e-5, not to 1e-6.
    assert float(one.beta_beta_dot[0]) == pytest.approx(fd, rel=2e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ddpm_schedule_in_torch(dtype: str) -> None:
    torch = pytest.importorskip("torch")
    sched = ddpm_schedule(DDPM_ALPHAS_CUMPROD)
    t = np.array([0.0, 0.3, 0.999, 1.0])
    got = sched(torch.tensor(t, dtype=getattr(torch, dtype)))
    want = sched(t)
    tol = 1e-14 if dtype == "float64" else 1e-6
    for name in ("alpha", "beta", "alpha_dot"):
        np.testing.assert_allclose(
            getattr(got, name).double().numpy(), getattr(want, name), rtol=tol, atol=tol
        )
    assert float(got.beta[-1]) == 0.0 and float(got.alpha[-1]) == 1.0  # data exactly at t = 1


def test_ddpm_schedule_rejects_bad_alphas() -> None:
    with pytest.raises(ValueError, match="decreasing"):
        ddpm_schedule(np.array([0.5, 0.9]))
    with pytest.raises(ValueError, match="1-D"):
        ddpm_schedule(np.array([0.5]))


def test_ddpm_schedule_matches_diffusers_add_noise() -> None:
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    sch = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched = ddpm_schedule(sch.alphas_cumprod)
    rng = np.random.default_rng(7)
    z, eps = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    i = np.array([0, 3, 100, 400, 800, 999])
    theirs = sch.add_noise(torch.tensor(z), torch.tensor(eps), torch.tensor(i)).numpy()
    ours = GaussianPath(sched).sample(z, ddpm_time(i), eps)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddpm_model_predictions_map_to_the_exact_velocity(prediction_type: str) -> None:
    # A perfect DDPM model predicts the exact posterior means; its velocity must be the exact
    # marginal field (computed by the engine from u_k = α̇ μ_k + A_k r_k, not from ε̂).
    sched = ddpm_schedule(DDPM_ALPHAS_CUMPROD)
    mp = MarginalPath(DATA, sched)

    def model(x: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        t = ddpm_time(timestep)
        eps_hat, x_hat = mp.noise_posterior_mean(x, t), mp.posterior_mean(x, t)
        if prediction_type == "epsilon":
            return eps_hat
        if prediction_type == "sample":
            return x_hat
        a = np.sqrt(np.interp(timestep, np.arange(1000), DDPM_ALPHAS_CUMPROD))[:, None]
        return a * eps_hat - np.sqrt(1 - a**2) * x_hat  # only integer steps are tested

    u = from_ddpm_model(model, DDPM_ALPHAS_CUMPROD, prediction_type=prediction_type)
    i = np.array([0.0, 5.0, 250.0, 600.0, 999.0])
    t = ddpm_time(i)
    x = mp.sample(5, t, rng=8)
    np.testing.assert_allclose(u(x, t), mp.vector_field(x, t), rtol=1e-8, atol=1e-8)
    # The wrong prediction type gives a wrong field.
    other = "sample" if prediction_type == "epsilon" else "epsilon"
    wrong = from_ddpm_model(model, DDPM_ALPHAS_CUMPROD, prediction_type=other)
    assert np.abs(wrong(x, t) - mp.vector_field(x, t)).max() > 0.1
    with pytest.raises(ValueError, match="1 − 1/N"):
        u(x, np.full(5, 1.0))


def test_ddpm_v_prediction_against_diffusers_get_velocity() -> None:
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    sch = diffusers.DDPMScheduler()
    ac = sch.alphas_cumprod
    mp = MarginalPath(DATA, ddpm_schedule(ac))

    def v_model(x: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        t = ddpm_time(timestep)
        steps = torch.tensor(np.rint(timestep).astype(np.int64))
        return sch.get_velocity(
            torch.tensor(mp.posterior_mean(x, t)),
            torch.tensor(mp.noise_posterior_mean(x, t)),
            steps,
        ).numpy()

    u = from_ddpm_model(v_model, ac, prediction_type="v_prediction")
    t = ddpm_time(np.array([2.0, 300.0, 900.0]))
    x = mp.sample(3, t, rng=9)
    # diffusers' ᾱ is float32: the velocity agrees to that rounding.
    np.testing.assert_allclose(u(x, t), mp.vector_field(x, t), rtol=1e-5, atol=1e-5)


def test_ddim_converges_to_fmrefs_ode_at_first_order() -> None:
    # DDIM (η = 0) with the exact ε̂ is a first-order solver of the probability-flow ODE; fmref
    # solves the same ODE with from_ddpm_model's velocity (RK4, 300 steps) and takes x̂ at the
    # last step, as DDIM's final step (ᾱ_prev = 1) does. The gap must shrink like 1/steps.
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    from fmref.samplers import integrate

    gaps = {}
    for steps in (250, 1000):
        sch = diffusers.DDIMScheduler(
            beta_schedule="scaled_linear",
            beta_start=0.00085,
            beta_end=0.012,
            set_alpha_to_one=True,
            clip_sample=False,  # the default clips x̂ to [−1, 1], which no ODE does
        )
        mp = MarginalPath(DATA, ddpm_schedule(sch.alphas_cumprod))
        sch.set_timesteps(steps)
        t0, t1 = (float(ddpm_time(float(sch.timesteps[k]))) for k in (0, -1))
        x0 = mp.sample(64, t0, rng=12)
        x = torch.tensor(x0)
        for ts in sch.timesteps:
            eps_hat = mp.noise_posterior_mean(x.numpy(), float(ddpm_time(float(ts))))
            x = sch.step(torch.tensor(eps_hat), ts, x).prev_sample
        u = from_ddpm_model(
            lambda y, i, mp=mp: mp.noise_posterior_mean(y, ddpm_time(i)), sch.alphas_cumprod
        )
        end = integrate(u, x0, method="rk4", steps=300, t0=t0, t1=t1).x
        gaps[steps] = float(np.abs(mp.posterior_mean(end, t1) - x.numpy()).max())
    assert gaps[1000] < 0.01
    assert 3.0 < gaps[250] / gaps[1000] < 5.0  # first order: 4x the steps, 1/4 the gap


# -- torchcfm: σ = 0 at t = 1, the target matcher's p_0, SB-CFM without OT --------------------


@pytest.mark.parametrize("matcher", ["cfm", "vp", "sb"])
def test_torchcfm_noise_at_t_one_is_finite(matcher: str) -> None:
    rng = np.random.default_rng(10)
    x0, e = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    t = np.array([0.5, 1.0, 1.0])
    np.testing.assert_array_equal(torchcfm_noise(matcher, x0, t), x0)
    if matcher == "sb":  # σ > 0 at t = 1: the limit ε'
        got = torchcfm_noise("sb", x0, t, e, 0.5)
        np.testing.assert_array_equal(got[1:], e[1:])
        assert np.all(np.isfinite(got))


def test_torchcfm_target_matcher_starts_at_p_init() -> None:
    # x_0 = (1 − (1 − σ)·0) ε = ε: p_0 = N(0, I) whatever z; p_1 = N(z, σ²).
    sched = torchcfm_schedule("target", 0.3)
    sv = sched(np.array([0.0, 1.0]))
    np.testing.assert_allclose(sv.alpha, [0.0, 1.0], rtol=0, atol=0)
    np.testing.assert_allclose(sv.beta, [1.0, 0.3], rtol=0, atol=1e-15)


def sb_xt(x0, x1, t, eps, sigma):  # SchrodingerBridgeCFM's path, typed from torchcfm's formula
    tc = t[:, None]
    return tc * x1 + (1 - tc) * x0 + sigma * np.sqrt(tc * (1 - tc)) * eps


def sb_ut(x0, x1, t, xt):
    tc = t[:, None]
    return (1 - 2 * tc) / (2 * tc * (1 - tc)) * (xt - (tc * x1 + (1 - tc) * x0)) + x1 - x0


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_torchcfm_sb_schedule_derivatives(sigma: float) -> None:
    sched = torchcfm_schedule("sb", sigma)
    t = np.linspace(0.02, 0.98, 25)
    h = 1e-6
    sv, up, dn = sched(t), sched(t + h), sched(t - h)
    np.testing.assert_allclose(sv.beta_dot, (up.beta - dn.beta) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        sv.beta_beta_dot, (up.beta**2 - dn.beta**2) / (4 * h), rtol=1e-6, atol=1e-9
    )
    one = sched(np.array([1.0]))
    assert one.beta_dot[0] == -math.inf
    assert float(one.beta_beta_dot[0]) == pytest.approx(-(sigma**2) / 2, rel=1e-6)
    assert sched(np.array([0.0])).beta[0] == 1.0
    if sigma == 1.0:
        assert isinstance(sched, SqrtBeta)


def test_torchcfm_sb_path_moments_and_target_by_monte_carlo() -> None:
    sigma, n, t0 = 0.8, 200_000, 0.3
    rng = np.random.default_rng(11)
    z = np.array([[1.5, -0.5]])
    x1 = np.repeat(z, n, axis=0)
    x0, eps = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    t = np.full(n, t0)
    xt = sb_xt(x0, x1, t, eps, sigma)
    path = GaussianPath(torchcfm_schedule("sb", sigma))
    sv = path.schedule(np.array([t0]))
    # Moments of x_t given z: mean α z, variance β² per coordinate (6 standard errors).
    var = (1 - t0) ** 2 + sigma**2 * t0 * (1 - t0)
    assert np.abs(xt.mean(0) - t0 * z[0]).max() < 6 * math.sqrt(var / n)
    assert np.abs(xt.var(0) - var).max() < 6 * var * math.sqrt(2 / n)
    np.testing.assert_allclose(sv.beta[0] ** 2, var, rtol=1e-14)
    e = torchcfm_noise("sb", x0, t, eps, sigma)
    np.testing.assert_allclose(path.sample(x1, t, e), xt, rtol=1e-12, atol=1e-12)
    # The SB target's mean given (x_t, z) is u_t(x_t | z): residual orthogonal to 1 and x_t.
    r = sb_ut(x0, x1, t, xt) - path.conditional_vector_field(xt, x1, t)
    feats = np.concatenate([np.ones((n, 1)), xt - xt.mean(0)], axis=1)
    prods = feats[:, :, None] * r[:, None, :]
    assert np.all(np.abs(prods.mean(0)) < 6 * np.sqrt((prods**2).mean(0) / n))
    # A wrong β (the "cfm" one with the same σ) fails the variance check.
    wrong = torchcfm_schedule("cfm", sigma)(np.array([t0])).beta[0] ** 2
    assert abs(xt.var(0)[0] - wrong) > 20 * var * math.sqrt(2 / n)


# -- loss scale: torchcfm / flow_matching / diffusers average over coordinates -----------------


def test_mean_reduction_is_the_libraries_mse() -> None:
    from fmref.losses import cfm_floor, cfm_loss, fm_loss

    data3 = GaussianMixture(W, np.array([[-1.0, 0.5, 2.0], [1.0, -1.0, 0.0]]), np.array([0.3, 0.6]))
    mp = MarginalPath(data3, Linear())
    field = lambda x, t: 0.9 * mp.vector_field(x, t)  # noqa: E731
    est = cfm_loss(field, mp, n=500, rng=3, reduction="mean")
    # The same draws, in the documented order, and the libraries' loss: mean over all entries
    # of (v − (z − ε))², as torch.mean((vt - ut) ** 2) in torchcfm's examples.
    g = np.random.default_rng(3)
    t = g.random(500)
    z = data3.sample(500, rng=g)
    eps = g.standard_normal(z.shape)
    x = t[:, None] * z + (1 - t[:, None]) * eps
    mse = float(np.mean((field(x, t) - (z - eps)) ** 2))
    assert est.value == pytest.approx(mse, rel=1e-12)
    assert est.reduction == "mean"
    summed = cfm_loss(field, mp, n=500, rng=3)
    assert summed.value == pytest.approx(3 * mse, rel=1e-12)
    fm_sum, fm_mean = fm_loss(field, mp, n=300), fm_loss(field, mp, n=300, reduction="mean")
    assert fm_mean.value == pytest.approx(fm_sum.value / 3, rel=1e-12)
    assert fm_mean.relative == pytest.approx(fm_sum.relative, rel=1e-12)  # a ratio: scale-free
    fl_sum, fl_mean = cfm_floor(mp, n=300), cfm_floor(mp, n=300, reduction="mean")
    np.testing.assert_allclose(fl_mean.profile, fl_sum.profile / 3, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="reduction"):
        cfm_floor(mp, n=300, reduction="avg")


def test_adapter_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="num_inference_steps"):
        diffusers_flow_match_grid(0)
    with pytest.raises(ValueError, match="shift"):
        diffusers_flow_match_grid(10, shift=-1.0)
    with pytest.raises(TypeError, match="shift"):
        diffusers_flow_match_grid(10, shift="3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_shift_type"):
        diffusers_flow_match_grid(10, mu=0.5, time_shift_type="cubic")
    with pytest.raises(TypeError, match="FlowMatch"):
        from_diffusers_scheduler(object())
    with pytest.raises(TypeError, match="model"):
        from_diffusers_model(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prediction_type"):
        from_ddpm_model(lambda x, t: x, DDPM_ALPHAS_CUMPROD, prediction_type="x0")
    with pytest.raises(TypeError, match="sigma"):
        torchcfm_schedule("sb", "0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        torchcfm_noise("cfm", np.zeros((2, 2)), np.array([0.1, 0.2]), sigma=0.3)
    with pytest.raises(ValueError, match="image_seq_len"):
        diffusers_mu(0)
    with pytest.raises(TypeError, match="num_inference_steps"):
        diffusers_flow_match_grid(2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mu"):
        diffusers_flow_match_grid(10, mu="0.5")  # type: ignore[arg-type]
    assert diffusers_flow_match_grid(np.int64(10), mu=np.float32(0.5)).t.shape == (11,)
