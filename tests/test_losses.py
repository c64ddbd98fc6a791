"""Exact yardsticks: fm_loss, cfm_floor, cfm_loss and the identity E L_CFM = L_FM + L*."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import multivariate_normal

from fmref.losses import LossEstimate, cfm_floor, cfm_loss, floor_profile, fm_loss
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, eight_gaussians
from fmref.mlp import MLP
from fmref.schedules import VP, Cosine, Linear, LinearVP, Polynomial, SqrtBeta
from fmref.train import TrainConfig, train

# A single full-covariance Gaussian: tr Cov(z|x) = tr(Σ − α² Σ S⁻¹ Σ), S = α²Σ + β²I, for
# every x (the textbook Gaussian conditioning formula), so ℓ*(t) is a function of t alone.
SIGMA = np.array([[1.5, 0.4, 0.1], [0.4, 0.8, -0.2], [0.1, -0.2, 0.5]])
MU = np.array([1.0, -2.0, 0.5])


def textbook_floor(schedule: object, t: float) -> float:
    s = schedule(np.array([t]))  # type: ignore[operator]
    a, b, ad, bd = (float(v[0]) for v in (s.alpha, s.beta, s.alpha_dot, s.beta_dot))
    c = ad - bd * a / b
    big_s = a * a * SIGMA + b * b * np.eye(3)
    cov = SIGMA - a * a * SIGMA @ np.linalg.solve(big_s, SIGMA)
    return c * c * float(np.trace(cov))


def mixed_full() -> GaussianMixture:
    g = np.random.default_rng(3)
    covs = []
    for _ in range(3):
        a = g.standard_normal((3, 3))
        covs.append(a @ a.T / 3 + 0.1 * np.eye(3))
    return GaussianMixture([0.2, 0.5, 0.3], g.standard_normal((3, 3)) * 2, np.stack(covs))


def rel(est: LossEstimate) -> float:
    """The relative FM loss and its stderr exist on fm_loss estimates only."""
    assert est.relative is not None and est.relative_stderr is not None
    return est.relative


def exact_by_posterior(mp: MarginalPath) -> Any:
    """u = α̇ E[z|x] + β̇ E[ε|x]: the exact field by another route than vector_field."""

    def field(x: Any, t: Any) -> Any:
        s = mp.schedule(t)
        xh, eh = mp.posterior_mean(x, t), mp.noise_posterior_mean(x, t)
        return s.alpha_dot[:, None] * xh + s.beta_dot[:, None] * eh

    return field


def test_fm_loss_of_exact_field_is_zero() -> None:
    mp = MarginalPath(eight_gaussians(), Linear())
    est = fm_loss(exact_by_posterior(mp), mp, n=3000, rng=0)
    np.testing.assert_allclose(est.value, 0.0, rtol=0, atol=1e-20)
    np.testing.assert_allclose(rel(est), 0.0, rtol=0, atol=1e-20)


def test_fm_loss_known_offsets() -> None:
    mp = MarginalPath(mixed_full(), Cosine())
    c = np.array([0.3, -1.0, 2.0])
    shifted = fm_loss(lambda x, t: mp.vector_field(x, t) + c, mp, n=500, rng=1)
    np.testing.assert_allclose(shifted.samples, c @ c, rtol=1e-12, atol=0)
    np.testing.assert_allclose(shifted.stderr, 0.0, rtol=0, atol=1e-12)
    # u^θ = 2u gives ||u^θ − u||² = ||u||², so the relative loss is exactly 1.
    doubled = fm_loss(lambda x, t: 2 * mp.vector_field(x, t), mp, n=500, rng=1)
    np.testing.assert_allclose(rel(doubled), 1.0, rtol=1e-12, atol=0)
    np.testing.assert_allclose(doubled.relative_stderr or 0.0, 0.0, rtol=0, atol=1e-12)


def test_profile_bins_average_to_value() -> None:
    mp = MarginalPath(eight_gaussians(), Linear())
    est = fm_loss(lambda x, t: 0 * x, mp, n=2000, rng=2, bins=7)
    counts = np.histogram(est.t, bins=est.t_edges)[0]
    np.testing.assert_allclose(counts @ est.profile / counts.sum(), est.value, rtol=1e-12, atol=0)
    assert est.profile.shape == (7,) and est.t_edges.shape == (8,)


def test_stderr_is_calibrated() -> None:
    """Over 40 independent repeats, the spread of the estimates matches the reported stderr."""
    mp = MarginalPath(eight_gaussians(), Linear())
    net = MLP(2, (16,), rng=4)
    runs = [fm_loss(net, mp, n=400, rng=s) for s in range(40)]
    vals = np.array([r.value for r in runs])
    rels = np.array([rel(r) for r in runs])
    se = np.mean([r.stderr for r in runs])
    rse = np.mean([r.relative_stderr for r in runs])
    # The sample std of 40 draws is within ±35% of sigma with probability > 0.99.
    np.testing.assert_allclose(vals.std(ddof=1), se, rtol=0.35, atol=0)
    np.testing.assert_allclose(rels.std(ddof=1), rse, rtol=0.35, atol=0)


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), Polynomial(2.0), VP()], ids=repr)
def test_floor_matches_textbook_gaussian(schedule: object) -> None:
    mp = MarginalPath(GaussianMixture.gaussian(MU, SIGMA), schedule)  # type: ignore[arg-type]
    t_max = 1.0 if not schedule.singular_at_one else 0.99  # type: ignore[attr-defined]
    est = cfm_floor(mp, n=400, rng=5, t_max=t_max)
    book = np.array([textbook_floor(schedule, float(t)) for t in est.t])
    np.testing.assert_allclose(est.samples, book, rtol=1e-9, atol=1e-12)
    exact, _ = integrate.quad(lambda t: textbook_floor(schedule, t), 0, t_max, limit=200)
    exact /= t_max
    assert abs(est.value - exact) < 4 * est.stderr


def textbook_posterior_cov_trace(data: GaussianMixture, x: np.ndarray, a: float, b: float) -> float:
    """tr Cov(z | x) for one point by dense Gaussian conditioning, component by component.

    z | x, k ~ N(e_k, C_k), e_k = μ_k + αΣ_k S_k⁻¹(x − αμ_k), C_k = Σ_k − α²Σ_k S_k⁻¹Σ_k, and
    P(k | x) ∝ π_k N(x; αμ_k, S_k) (scipy); then the law of total variance.
    """
    covs, d = data.full_covs(), data.dim
    dens, e, tr_c = [], [], []
    for w, mu, sig in zip(data.weights, data.means, covs, strict=True):
        big_s = a * a * sig + b * b * np.eye(d)
        dens.append(w * multivariate_normal(a * mu, big_s).pdf(x))
        e.append(mu + a * sig @ np.linalg.solve(big_s, x - a * mu))
        tr_c.append(np.trace(sig - a * a * sig @ np.linalg.solve(big_s, sig)))
    gam = np.array(dens) / np.sum(dens)
    e_arr = np.array(e)
    mean = gam @ e_arr
    return float(gam @ (np.array(tr_c) + np.sum((e_arr - mean) ** 2, axis=1)))


def test_floor_integrand_matches_textbook_conditioning() -> None:
    """ℓ*(t, x) = c_t² tr Cov(z|x) against dense per-component Gaussian conditioning (scipy)."""
    for data in (eight_gaussians(), mixed_full()):
        for schedule in (Linear(), Cosine(), SqrtBeta()):
            mp = MarginalPath(data, schedule)
            g = np.random.default_rng(6)
            t = g.uniform(0.05, 0.95, 40)
            x = mp.sample(40, t, rng=g)
            s = schedule(t)
            c = s.alpha_dot - s.beta_dot * s.alpha / s.beta
            ref = (
                c
                * c
                * np.array(
                    [
                        textbook_posterior_cov_trace(data, x[i], s.alpha[i], s.beta[i])
                        for i in range(40)
                    ]
                )
            )
            np.testing.assert_allclose(mp.cfm_floor_integrand(x, t), ref, rtol=1e-8, atol=1e-10)


def test_floor_at_t0_is_data_covariance_trace() -> None:
    data = mixed_full()
    mp = MarginalPath(data, Linear())
    mean, se = floor_profile(mp, [0.0], n=50, rng=0)
    # At t = 0, x = ε carries no information: c_0² tr Cov(z|x) = tr Cov(p_data).
    np.testing.assert_allclose(mean, np.trace(data.covariance()), rtol=1e-12, atol=0)
    np.testing.assert_allclose(se, 0.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("schedule", "limit"),
    [
        # Near t = 1: c_t ≈ −β̇/β = −ββ̇/β², tr Cov(z|x) ≈ d β², so ℓ*(t) ≈ d (ββ̇)²/β². With
        # β² ≈ κ(1 − t) and ββ̇ → −κ/2 (SqrtBeta κ = 1, LinearVP κ = 2, VP κ = b = 0.1):
        # (1 − t) ℓ*(t) → d κ/4, here d = 2.
        (SqrtBeta(), 2 * 1.0 / 4),
        (LinearVP(), 2 * 2.0 / 4),
        (VP(), 2 * 0.1 / 4),
    ],
    ids=repr,
)
def test_floor_diverges_like_one_over_one_minus_t(schedule: object, limit: float) -> None:
    mp = MarginalPath(eight_gaussians(), schedule)  # type: ignore[arg-type]
    eps = np.array([1e-5, 1e-6, 1e-7])
    mean, _ = floor_profile(mp, 1 - eps, n=200, rng=7)
    np.testing.assert_allclose(mean * eps, limit, rtol=1e-2, atol=0)
    est = cfm_floor(mp, n=200, rng=0)
    assert math.isinf(est.value) and not est.finite
    assert est.warning is not None and "infinite" in est.warning
    assert cfm_floor(mp, n=200, rng=0, t_max=0.9).finite
    assert cfm_loss(lambda x, t: 0 * x, mp, n=200, rng=0).warning is not None


def test_floor_diverges_at_zero_for_polynomial_half() -> None:
    """Polynomial(p): c_t = α̇/β ≈ p t^(p−1) and tr Cov(z|x) → tr Cov(z) as t → 0, so
    t^(2−2p) ℓ*(t) → p² tr Cov(z) and L* = ∫ ℓ* dt is infinite for p ≤ ½ (finite for p > ½)."""
    data = eight_gaussians()
    mp = MarginalPath(data, Polynomial(0.5))
    ts = np.array([1e-6, 1e-7])
    mean, se = floor_profile(mp, ts, n=4000, rng=8)
    limit = 0.25 * float(np.trace(data.covariance()))
    assert np.all(np.abs(mean * ts - limit) < 4 * se * ts + 1e-2 * limit), (mean * ts, limit)
    est = cfm_floor(mp, n=200, rng=0, t_max=0.5)
    assert math.isinf(est.value) and est.warning is not None and "t = 0" in est.warning
    assert cfm_loss(lambda x, t: 0 * x, mp, n=200, rng=0).warning is not None
    assert cfm_floor(MarginalPath(data, Polynomial(0.75)), n=200, rng=0).finite


@pytest.mark.parametrize(("schedule", "limit"), [(Linear(), 2.0), (Cosine(), 2 * math.pi**2 / 4)])
def test_floor_bounded_for_regular_schedules(schedule: object, limit: float) -> None:
    # Linear: c = 1/(1−t), tr Cov ≈ d(1−t)² → ℓ* → d; Cosine: c = (π/2)/cos, tr Cov ≈ d cos².
    mp = MarginalPath(eight_gaussians(), schedule)  # type: ignore[arg-type]
    mean, _ = floor_profile(mp, [1 - 1e-6], n=200, rng=8)
    np.testing.assert_allclose(mean, limit, rtol=1e-3, atol=0)
    assert cfm_floor(mp, n=200, rng=0).warning is None


@pytest.mark.parametrize("schedule", [Linear(), Cosine(), Polynomial(2.0)], ids=repr)
def test_cfm_loss_of_exact_field_is_the_floor(schedule: object) -> None:
    mp = MarginalPath(mixed_full(), schedule)  # type: ignore[arg-type]
    cfm = cfm_loss(mp.vector_field, mp, n=20000, rng=9)
    floor = cfm_floor(mp, n=20000, rng=9)
    np.testing.assert_array_equal(cfm.t, floor.t)  # common random numbers
    diff = cfm.samples - floor.samples
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(diff.size)
    floor2 = cfm_floor(mp, n=20000, rng=10)  # independent draws, combined stderr
    assert abs(cfm.value - floor2.value) < 4 * math.hypot(cfm.stderr, floor2.stderr)


def _trained(mp: MarginalPath) -> MLP:
    net = MLP(2, (32, 32), rng=1)
    train(net, mp, TrainConfig(steps=300, batch=128, lr=3e-3, objective="linear", eval_n=64))
    return net


@pytest.mark.slow
@pytest.mark.parametrize("which", ["random", "trained"])
def test_cfm_equals_fm_plus_floor(which: str) -> None:
    """The lecture's key claim: E L_CFM(θ) = L_FM(θ) + L*, for any θ."""
    mp = MarginalPath(eight_gaussians(), Linear())
    net = MLP(2, (32, 32), rng=1) if which == "random" else _trained(mp)
    n = 20000
    # Equal seeds draw the same (t, z, ε): common random numbers, so subtract per sample.
    cfm = cfm_loss(net, mp, n=n, rng=11)
    fm = fm_loss(net, mp, n=n, rng=11)
    floor = cfm_floor(mp, n=n, rng=11)
    diff = cfm.samples - fm.samples - floor.samples
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(n)
    fm2, floor2 = fm_loss(net, mp, n=n, rng=12), cfm_floor(mp, n=n, rng=13)
    se = math.sqrt(cfm.stderr**2 + fm2.stderr**2 + floor2.stderr**2)
    assert abs(cfm.value - fm2.value - floor2.value) < 4 * se
    if which == "trained":  # the trained net is far from the random one: a real test of θ
        assert rel(fm) < 0.5 * rel(fm_loss(MLP(2, (32, 32), rng=1), mp, n=2000))


def test_backends_agree(backend: Any) -> None:
    mp = MarginalPath(mixed_full(), Cosine())
    like = backend.asarray(np.zeros((1, 3)))
    field = lambda x, t: 0.5 * mp.vector_field(x, t)  # noqa: E731
    for fn in (
        lambda **k: fm_loss(field, mp, **k),
        lambda **k: cfm_loss(field, mp, **k),
        lambda **k: cfm_floor(mp, **k),
    ):
        ref, got = fn(n=300, rng=3), fn(n=300, rng=3, like=like)
        np.testing.assert_allclose(got.samples, ref.samples, rtol=1e-10, atol=1e-12)


def test_float32(backend32: Any) -> None:
    mp = MarginalPath(eight_gaussians(), Linear())
    like = backend32.asarray(np.zeros((1, 2)))
    got = cfm_floor(mp, n=300, rng=3, like=like)
    ref = cfm_floor(mp, n=300, rng=3)
    np.testing.assert_allclose(got.value, ref.value, rtol=1e-4, atol=0)


def test_bad_input() -> None:
    mp = MarginalPath(eight_gaussians(), Linear())
    zero = lambda x, t: 0 * x  # noqa: E731
    with pytest.raises(ValueError, match="n must"):
        fm_loss(zero, mp, n=1)
    with pytest.raises(ValueError, match="t_max"):
        cfm_floor(mp, t_max=1.5)
    with pytest.raises(ValueError, match="bins"):
        cfm_loss(zero, mp, bins=0)
    with pytest.raises(TypeError, match="MarginalPath"):
        cfm_floor(eight_gaussians())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        fm_loss(lambda x, t: x[:, :1], mp, n=10)
    with pytest.raises(ValueError, match="field returned non-finite"):
        fm_loss(
            lambda x, t: np.full_like(x, np.nan), mp, n=10
        )  # a NaN loss would pass silently otherwise
    with pytest.raises(ValueError, match="field returned non-finite"):
        cfm_loss(lambda x, t: np.full_like(x, np.inf), mp, n=10)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        floor_profile(mp, [1.0])


def test_fm_loss_against_a_reference_field() -> None:
    """With ``reference`` = the exact CFG field at w = 2, u^2 − u_y = u_y − u, so the loss of
    u_y against it is the loss of u against u_y on the same draws; the default target (u_t
    of the class path, u_y itself) gives 0 instead."""
    from fmref.guidance import CFG
    from fmref.mixtures import eight_gaussians_classes

    mp = MarginalPath(eight_gaussians_classes(2), Linear())
    cond = MarginalPath(mp.data.given(1), mp.path)
    u_y = lambda x, t: mp.vector_field(x, t, y=1)  # noqa: E731
    guided = fm_loss(u_y, cond, n=500, rng=3, reference=CFG(mp, 1, 2.0).vector_field)
    swapped = fm_loss(mp.vector_field, cond, n=500, rng=3)
    np.testing.assert_allclose(guided.samples, swapped.samples, rtol=1e-10, atol=1e-12)
    assert guided.value > 1.0
    assert fm_loss(u_y, cond, n=500, rng=3).value < 1e-20
    with pytest.raises(TypeError, match="reference"):
        fm_loss(u_y, cond, n=10, reference=3)  # type: ignore[arg-type]
