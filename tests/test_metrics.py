"""Sample-quality metrics, each against a case with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm, wasserstein_distance

from fmref.metrics import (
    compare_log_prob,
    coverage,
    energy_distance,
    energy_null,
    mean_log_prob,
    sliced_wasserstein,
)
from fmref.mixtures import GaussianMixture, eight_gaussians

MEAN = np.array([1.0, -1.0])
COV = np.array([[1.2, 0.3], [0.3, 0.7]])


def test_log_prob_of_exact_samples_matches_negative_entropy():
    """E[log N(x; μ, Σ)] = −½(d log 2π + log det Σ + d); wrong samples are flagged."""
    data = GaussianMixture.gaussian(MEAN, COV)
    g = np.random.default_rng(0)
    x, ref = data.sample(3000, rng=g), data.sample(20_000, rng=g)
    cmp = compare_log_prob(data.log_prob, x, ref)
    neg_entropy = -0.5 * (2 * math.log(2 * math.pi) + math.log(np.linalg.det(COV)) + 2)
    np.testing.assert_allclose(cmp.reference_mean, neg_entropy, rtol=0,
                               atol=5 * cmp.reference_stderr)  # fmt: skip
    np.testing.assert_allclose(cmp.mean, neg_entropy, rtol=0, atol=5 * cmp.stderr)
    assert abs(cmp.z) < 4
    # Samples with 1.3x the spread score lower on average.
    wide = MEAN + 1.3 * (data.sample(3000, rng=g) - MEAN)
    assert compare_log_prob(data.log_prob, wide, ref).z < -10


def test_mean_log_prob_against_the_data(backend):
    data = eight_gaussians()
    x = backend.asarray(data.sample(2000, rng=12))
    cmp = mean_log_prob(data, x, rng=13, n_reference=5000)
    assert abs(cmp.z) < 4, cmp
    # A sampler that collapses to the mode centres scores *higher* than the data: the metric
    # reports the gap with its sign rather than a distance.
    centres = backend.asarray(data.means[np.arange(2000) % 8])
    assert mean_log_prob(data, centres, rng=13, n_reference=5000).z > 10


def test_energy_distance_null_level_and_known_values():
    data = eight_gaussians()
    g = np.random.default_rng(1)
    null = energy_null(lambda m, r: data.sample(m, rng=r), 400, 300, rng=g, repeats=25)
    # U-statistics: expectation exactly 0 for identical distributions.
    np.testing.assert_allclose(null.mean(), 0.0, rtol=0, atol=4 * null.std(ddof=1) / 5)
    # Point masses at a and b: 2|a − b|.
    a, b = np.array([[0.0, 1.0]]), np.array([[3.0, 5.0]])
    np.testing.assert_allclose(
        energy_distance(np.repeat(a, 4, 0), np.repeat(b, 5, 0)), 10.0, rtol=1e-12, atol=0
    )


@pytest.mark.slow
def test_energy_distance_of_shifted_normals():
    """1-D N(0,1) vs N(δ,1): 2E|N(δ, 2)| − 2E|N(0, 2)| with E|N(μ, s²)| = s√(2/π)e^{−μ²/2s²}
    + μ(1 − 2Φ(−μ/s))."""
    delta, s = 1.0, math.sqrt(2.0)

    def abs_mean(mu: float) -> float:
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s * s)) + mu * (
            1 - 2 * norm.cdf(-mu / s)
        )

    want = 2 * abs_mean(delta) - 2 * abs_mean(0.0)
    g = np.random.default_rng(2)
    stats = np.array(
        [
            energy_distance(g.standard_normal((1500, 1)), delta + g.standard_normal((1500, 1)))
            for _ in range(8)
        ]
    )
    se = stats.std(ddof=1) / math.sqrt(stats.size)
    np.testing.assert_allclose(stats.mean(), want, rtol=0, atol=4 * se)
    assert se < 0.05 * want  # the check resolves the value to a few percent


def test_coverage_of_exact_and_mode_dropping_samples():
    data = eight_gaussians()
    x = data.sample(8000, rng=3)
    cov = coverage(data, x)
    np.testing.assert_allclose(cov.weights, np.full(8, 1 / 8), rtol=1e-12, atol=0)
    assert np.all(np.abs(cov.z) < 4), cov
    np.testing.assert_allclose(cov.shares.sum(), 1.0, rtol=1e-12, atol=0)
    # Drop mode 2: its share is 0 and the others absorb it.
    z, comp = data.sample(8000, rng=4, return_components=True)
    dropped = coverage(data, z[comp != 2])
    assert dropped.shares[2] == 0.0 and dropped.z[2] < -10
    # Unequal weights are reported against π_k.
    w = np.array([0.6, 0.3, 0.1])
    skew = GaussianMixture(w, [[-6.0, 0.0], [0.0, 0.0], [6.0, 0.0]], np.full(3, 0.5))
    c = coverage(skew, skew.sample(5000, rng=5))
    assert np.all(np.abs(c.z) < 4), c


@pytest.mark.slow
def test_sliced_wasserstein_of_a_shift():
    """Y = X + δ: every 1-D distance is |θ·δ|, so SW_2² = E(θ·δ)² = |δ|²/d."""
    delta = np.array([3.0, -1.0])
    x = np.random.default_rng(6).standard_normal((500, 2))
    L = 4000
    sw = sliced_wasserstein(x, x + delta, rng=7, n_projections=L)
    # (θ·δ)² = |δ|² cos²φ, Var(cos²φ) = 1/8 for φ uniform.
    se = delta @ delta * math.sqrt(1 / 8 / L)
    np.testing.assert_allclose(sw**2, delta @ delta / 2, rtol=0, atol=5 * se)
    # Independent samples of N(0, I) and N(δ, I): close to the same value.
    g = np.random.default_rng(8)
    a, b = g.standard_normal((3000, 2)), delta + g.standard_normal((3000, 2))
    np.testing.assert_allclose(sliced_wasserstein(a, b, rng=9, n_projections=512),
                               math.sqrt(delta @ delta / 2), rtol=0.03, atol=0)  # fmt: skip
    same = sliced_wasserstein(a, g.standard_normal((3000, 2)), rng=9, n_projections=512)
    assert same < 0.1


def test_sliced_wasserstein_in_one_dimension_is_exact():
    """d = 1: θ = ±1, so SW_p = W_p between the empirical measures, also for n ≠ m."""
    g = np.random.default_rng(10)
    u, v = g.standard_normal(37), 0.5 + 2 * g.standard_normal(23)
    np.testing.assert_allclose(
        sliced_wasserstein(u[:, None], v[:, None], rng=0, n_projections=3, p=1),
        wasserstein_distance(u, v),
        rtol=1e-12,
        atol=0,
    )
    # By hand: {0, 1} vs {0, 0.5, 1}; quantile cells of widths 1/3, 1/6, 1/6, 1/3 with gaps
    # 0, 0.5, 0.5, 0, so W_2² = 2 · (1/6) · 0.25 = 1/12.
    w2 = sliced_wasserstein(
        np.array([[0.0], [1.0]]), np.array([[0.0], [0.5], [1.0]]), rng=0, n_projections=2
    )
    np.testing.assert_allclose(w2**2, 1 / 12, rtol=1e-12, atol=0)


def test_backends_agree(backend):
    g = np.random.default_rng(11)
    x, y = g.standard_normal((60, 2)), 1 + g.standard_normal((50, 2))
    bx, by = backend.asarray(x), backend.asarray(y)
    np.testing.assert_allclose(energy_distance(bx, by), energy_distance(x, y), rtol=1e-10, atol=0)
    np.testing.assert_allclose(
        sliced_wasserstein(bx, by, rng=3), sliced_wasserstein(x, y, rng=3), rtol=1e-10, atol=0
    )
    data = eight_gaussians()
    z = data.sample(100, rng=12)
    np.testing.assert_array_equal(coverage(data, backend.asarray(z)).shares,
                                  coverage(data, z).shares)  # fmt: skip


def test_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same d"):
        energy_distance(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 points"):
        energy_distance(x[:1], x)
    with pytest.raises(ValueError, match="same d"):
        sliced_wasserstein(x, np.zeros((5, 3)), rng=0)
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, rng=0, n_projections=0)
    with pytest.raises(TypeError, match="y must share x's namespace and dtype"):
        energy_distance(x, x.astype(np.float32))  # no silent up-casting
    with pytest.raises(TypeError, match="y must share x's namespace and dtype"):
        sliced_wasserstein(x, x.astype(np.float32), rng=0)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein(x, x, rng=0, p=0.5)
    with pytest.raises(TypeError, match="GaussianMixture"):
        coverage("data", x)
    with pytest.raises(ValueError, match="finite"):
        energy_distance(np.full((3, 2), np.nan), x)
    with pytest.raises(TypeError, match="callable"):
        compare_log_prob(None, x, x)
    with pytest.raises(ValueError, match="n_reference"):
        mean_log_prob(eight_gaussians(), x, 0, n_reference=1)
    with pytest.raises(ValueError, match="repeats"):
        energy_null(eight_gaussians().sample, 5, 5, rng=0, repeats=0)
