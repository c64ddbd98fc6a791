"""Euler–Maruyama SDE sampling: marginals preserved with the exact score, noise increments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmref.marginals import MarginalPath
from fmref.metrics import compare_log_prob
from fmref.mixtures import eight_gaussians
from fmref.samplers import integrate
from fmref.schedules import Cosine, Linear
from fmref.sde import integrate_sde, sample_sde


def _zero(x, t):
    return 0 * x


# σ_t choices: constants and a decaying callable; (schedule, sigma, id).
SIGMAS = [
    (Linear(), 0.5),
    (Linear(), 2.0),
    (Linear(), lambda t: 2.0 * (1.0 - t)),
    (Cosine(), 1.0),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("schedule", "sigma"), SIGMAS, ids=["lin-0.5", "lin-2", "lin-decay", "cos-1"]
)
def test_exact_score_preserves_marginals(schedule, sigma):
    """Samples at t = 0.5, 0.75, 1 have the exact mean log p_t (within 4 standard errors)."""
    mp = MarginalPath(eight_gaussians(), schedule)
    g = np.random.default_rng(0)
    res = sample_sde(mp, 2000, rng=g, sigma=sigma, steps=150, return_trajectory=True)
    assert res.method == "euler_maruyama" and res.nfe == 150
    for t, i in ((0.5, 75), (0.75, 112), (1.0, 150)):
        t = float(res.times[i])
        ref = mp.sample(20_000, t, rng=g)
        cmp = compare_log_prob(lambda y, t=t: mp.log_prob(y, t), res.trajectory[i], ref)
        assert abs(cmp.z) < 4, (t, cmp)


@pytest.mark.slow
def test_missing_score_correction_is_detected():
    """Without the σ²/2 ∇log p_t drift the same noise spreads the samples: the check fails."""
    mp = MarginalPath(eight_gaussians(), Linear())
    g = np.random.default_rng(1)
    x0 = mp.sample(2000, 0.0, rng=g)
    res = integrate_sde(mp.vector_field, x0, rng=g, sigma=2.0, score=_zero, steps=150)
    ref = mp.sample(20_000, 1.0, rng=g)
    cmp = compare_log_prob(mp.data.log_prob, res.x, ref)
    assert cmp.z < -10, cmp


def test_noise_is_one_normal_draw_per_step():
    """With zero drift, X_{i+1} − X_i = σ_i √h_i ξ_i and ξ_i is the i-th (n, d) normal draw."""
    grid = np.array([0.0, 0.1, 0.15, 0.4, 0.7, 1.0])
    x0 = np.zeros((5, 3))
    res = integrate_sde(_zero, x0, rng=42, sigma=lambda t: 1.0 + t, score=_zero, grid=grid,
                        return_trajectory=True)  # fmt: skip
    g = np.random.default_rng(42)
    for i in range(5):
        xi = g.standard_normal((5, 3))
        want = (1.0 + grid[i]) * math.sqrt(grid[i + 1] - grid[i]) * xi
        np.testing.assert_allclose(
            res.trajectory[i + 1] - res.trajectory[i], want, rtol=1e-13, atol=1e-15
        )


def test_increment_distribution():
    """Increments are N(0, σ² h): mean, variance and kurtosis (3, not the 9 of a product of
    two normals) within 5 standard errors, and uncorrelated across steps."""
    sigma, n, d = 1.5, 4000, 2
    grid = np.linspace(0.0, 1.0, 21) ** 2
    res = integrate_sde(_zero, np.zeros((n, d)), rng=7, sigma=sigma, score=_zero, grid=grid,
                        return_trajectory=True)  # fmt: skip
    inc = np.diff(res.trajectory, axis=0)  # (20, n, d)
    h = np.diff(grid)
    m = n * d
    for i in range(20):
        v = inc[i].ravel()
        var = sigma**2 * h[i]
        np.testing.assert_allclose(v.mean(), 0.0, rtol=0, atol=5 * math.sqrt(var / m))
        np.testing.assert_allclose(v.var(ddof=1), var, rtol=5 * math.sqrt(2.0 / (m - 1)), atol=0)
    z = (inc / (sigma * np.sqrt(h))[:, None, None]).ravel()
    kurt = np.mean(z**4) / np.mean(z**2) ** 2
    np.testing.assert_allclose(kurt, 3.0, rtol=0, atol=5 * math.sqrt(24.0 / z.size))
    zs = inc / (sigma * np.sqrt(h))[:, None, None]
    lag1 = np.mean(zs[1:] * zs[:-1])
    np.testing.assert_allclose(lag1, 0.0, rtol=0, atol=5 / math.sqrt(zs[1:].size))


def test_zero_sigma_is_euler_and_skips_the_score():
    mp = MarginalPath(eight_gaussians(), Cosine())
    x0 = np.random.default_rng(3).standard_normal((40, 2))

    def never(x, t):
        raise AssertionError("score must not be called when sigma = 0")

    sde = integrate_sde(mp.vector_field, x0, rng=0, sigma=0.0, score=never, steps=30)
    ode = integrate(mp.vector_field, x0, method="euler", steps=30)
    np.testing.assert_allclose(sde.x, ode.x, rtol=1e-14, atol=1e-14)


@pytest.mark.slow
def test_backends_agree(backend):
    mp = MarginalPath(eight_gaussians(), Linear())
    x0 = np.random.default_rng(4).standard_normal((25, 2))
    want = integrate_sde(mp.vector_field, x0, rng=5, sigma=0.7, score=mp.score, steps=20)
    got = integrate_sde(mp.vector_field, backend.asarray(x0), rng=5, sigma=0.7, score=mp.score,
                        steps=20)  # fmt: skip
    assert type(got.x) is type(backend.asarray(x0))
    np.testing.assert_allclose(backend.to_numpy(got.x), want.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("sigma", "exc", "match"),
    [
        (-0.1, ValueError, r"sigma must be finite and >= 0; sigma\(0\.0\) = -0\.1"),
        (lambda t: 0.5 - t, ValueError, r"sigma\(0\.6\d*\) = -0\.1"),
        (lambda t: math.inf, ValueError, "finite"),
        (float("nan"), ValueError, "finite"),
        ("big", TypeError, "sigma must be a float or a callable"),
        (lambda t: "x", TypeError, "must be a real number"),
    ],
)
def test_bad_sigma(sigma, exc, match):
    with pytest.raises(exc, match=match):
        integrate_sde(_zero, np.zeros((2, 2)), rng=0, sigma=sigma, score=_zero, steps=10)


def test_bad_input():
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match="score is required"):
        integrate_sde(_zero, x0, rng=0, sigma=1.0)
    with pytest.raises(ValueError, match="forward in time"):
        integrate_sde(_zero, x0, rng=0, sigma=1.0, score=_zero, t0=1.0, t1=0.0)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        integrate_sde(_zero, x0, rng=0, sigma=1.0, score=_zero, steps=0)
    with pytest.raises(ValueError, match=r"score returned shape \(3, 1\) at step 0"):
        integrate_sde(_zero, x0, rng=0, sigma=1.0, score=lambda x, t: x[:, :1], steps=5)
    with pytest.raises(ValueError, match=r"score returned non-finite values at step 3 \(t = 0\.6"):
        integrate_sde(
            _zero, x0, rng=0, sigma=1.0, steps=5,
            score=lambda x, t: np.where(t[:, None] > 0.5, np.inf, 0.0) + x,
        )  # fmt: skip
    with pytest.raises(TypeError, match="rng must be"):
        integrate_sde(_zero, x0, rng=None, sigma=1.0, score=_zero)
    with pytest.raises(TypeError, match="marginal must be a MarginalPath"):
        sample_sde(None, 10, rng=0, sigma=1.0)
