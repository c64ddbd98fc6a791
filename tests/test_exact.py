"""The closed-form single-Gaussian flow, checked by routes independent of its formula."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmref.exact import gaussian_flow
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture
from fmref.schedules import VP, Cosine, Linear, Polynomial

# Analytic cases as data: (mean, cov) in the three covariance formats.
CASES = {
    "full": (np.array([1.5, -0.5]), np.array([[2.0, 0.6], [0.6, 0.5]])),
    "diagonal": (np.array([3.0, 1.0]), np.array([0.1, 4.0])),
    "isotropic": (np.array([-1.0, 2.0, 0.5]), 0.7),
}
SCHEDULES = [Linear(), Cosine(), Polynomial(2.0)]


def _field(mean, cov, schedule):
    c = np.asarray(cov, dtype=np.float64)
    return MarginalPath(GaussianMixture.gaussian(mean, c), schedule)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_time_derivative_is_the_marginal_field(case, schedule):
    """Central difference d/dt X_t (h = 1e-5, error O(h²)) equals u_t(X_t) from marginals."""
    mean, cov = CASES[case]
    mp = _field(mean, cov, schedule)
    x0 = np.random.default_rng(1).standard_normal((40, mean.shape[0]))
    h = 1e-5
    for t in (0.1, 0.4, 0.75, 0.95):
        xt = gaussian_flow(mean, cov, schedule, x0, t)
        fd = (
            gaussian_flow(mean, cov, schedule, x0, t + h)
            - gaussian_flow(mean, cov, schedule, x0, t - h)
        ) / (2 * h)
        np.testing.assert_allclose(fd, mp.vector_field(xt, t), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("schedule", [Linear(), Cosine()], ids=repr)
def test_pushforward_of_p_init_has_the_data_moments(schedule):
    """X_1 of N(0, I) samples: mean μ and covariance Σ within Monte Carlo error."""
    mean, cov = CASES["full"]
    n = 40_000
    x0 = np.random.default_rng(2).standard_normal((n, 2))
    x1 = gaussian_flow(mean, cov, schedule, x0, 1.0)
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_allclose(x1.mean(axis=0), mean, rtol=0, atol=5 * se_mean.max())
    # SE of a covariance entry: √((Σ_ii Σ_jj + Σ_ij²)/n) ≤ √(2/n) max Σ_ii.
    se_cov = np.sqrt(2.0 / n) * np.diag(cov).max()
    np.testing.assert_allclose(np.cov(x1.T), cov, rtol=0, atol=5 * se_cov)


def test_vp_from_exact_p0_samples():
    """VP starts from p_0 = N(α_0 μ, S_0) ≠ N(0, I): mapping exact p_0 samples gives p_t."""
    mean, cov = CASES["full"]
    mp = _field(mean, cov, VP())
    x0 = mp.sample(30_000, 0.0, rng=3)
    xt = gaussian_flow(mean, cov, VP(), x0, 0.6)
    s = VP()(0.6)
    target_cov = float(s.alpha) ** 2 * cov + float(s.beta) ** 2 * np.eye(2)
    se = np.sqrt(2.0 / 30_000) * np.diag(target_cov).max()
    np.testing.assert_allclose(np.cov(xt.T), target_cov, rtol=0, atol=5 * se)
    np.testing.assert_allclose(xt.mean(axis=0), float(s.alpha) * mean, rtol=0, atol=5 * se)


@given(
    t=st.floats(0.0, 1.0),
    s=st.floats(0.0, 1.0),
    case=st.sampled_from(sorted(CASES)),
)
def test_flow_composes_and_inverts(t, s, case):
    """Flow maps compose: φ_{s←t} ∘ φ_{t←0} = φ_{s←0}, and φ_{0←t} ∘ φ_{t←0} = id."""
    mean, cov = CASES[case]
    x0 = np.random.default_rng(4).standard_normal((5, mean.shape[0]))
    sch = Cosine()
    xt = gaussian_flow(mean, cov, sch, x0, t)
    np.testing.assert_allclose(
        gaussian_flow(mean, cov, sch, xt, s, t0=t),
        gaussian_flow(mean, cov, sch, x0, s),
        rtol=1e-10,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        gaussian_flow(mean, cov, sch, xt, 0.0, t0=t), x0, rtol=1e-9, atol=1e-9
    )


def test_backends_agree(backend):
    mean, cov = CASES["full"]
    x0 = np.random.default_rng(5).standard_normal((7, 2))
    t = np.linspace(0.0, 1.0, 7)
    want = gaussian_flow(mean, cov, Linear(), x0, t)
    got = gaussian_flow(mean, cov, Linear(), backend.asarray(x0), backend.asarray(t))
    assert type(got) is type(backend.asarray(x0))
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)


def test_bad_input():
    mean, cov = CASES["full"]
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match="t must lie in"):
        gaussian_flow(mean, cov, Linear(), x0, 1.5)
    with pytest.raises(ValueError, match="t0 must lie in"):
        gaussian_flow(mean, cov, Linear(), x0, 0.5, t0=-0.1)
    with pytest.raises(ValueError, match="positive semidefinite"):
        gaussian_flow(mean, -np.eye(2), Linear(), x0, 0.5)
    with pytest.raises(ValueError, match="symmetric"):
        gaussian_flow(mean, np.array([[1.0, 0.5], [0.0, 1.0]]), Linear(), x0, 0.5)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        gaussian_flow(mean, cov, Linear(), np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="singular"):
        gaussian_flow(mean, np.zeros((2, 2)), Linear(), x0, 0.5, t0=1.0)
    with pytest.raises(TypeError, match="Schedule"):
        gaussian_flow(mean, cov, "linear", x0, 0.5)
