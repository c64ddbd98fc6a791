"""Likelihood through the divergence: exact reproduction of log p_data, Hutchinson's bias."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fmref.exact import gaussian_flow
from fmref.likelihood import Hutchinson, log_likelihood
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, eight_gaussians
from fmref.samplers import METHODS
from fmref.schedules import VP, Cosine, Linear

MEAN = np.array([1.0, -2.0])
COV = np.array([[1.5, -0.4], [-0.4, 0.6]])


def _mixture() -> GaussianMixture:
    covs = np.array(
        [[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.3, 0.0], [0.0, 0.1]]]
    )
    return GaussianMixture([0.5, 0.3, 0.2], [[2.0, 1.0], [-2.0, 0.5], [0.0, -2.5]], covs)


@pytest.mark.parametrize("data", [_mixture(), eight_gaussians()], ids=["full-3", "eight"])
@pytest.mark.parametrize("schedule", [Linear(), Cosine()], ids=repr)
def test_exact_field_reproduces_log_p_data(data, schedule):
    """Target ≤ 1e-5 nats in float64; DOP853 at rtol = atol = 1e-10 reaches ~1e-9."""
    mp = MarginalPath(data, schedule)
    x1 = data.sample(150, rng=0)
    res = log_likelihood(mp.vector_field, x1, divergence=mp.divergence)
    np.testing.assert_allclose(res.log_prob, data.log_prob(x1), rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.log_prob, res.log_p0 - res.delta, rtol=0, atol=1e-12)
    assert res.stderr is None and res.method == "dop853" and res.nfe > 0


@pytest.mark.slow
def test_vp_needs_exact_log_p0():
    data = _mixture()
    mp = MarginalPath(data, VP())
    x1 = data.sample(100, rng=1)
    res = log_likelihood(mp.vector_field, x1, log_p0=lambda x: mp.log_prob(x, 0.0))
    np.testing.assert_allclose(res.log_prob, data.log_prob(x1), rtol=0, atol=1e-8)
    # N(0, I) in place of p_0 is off by a visible amount (α_0 ≈ 6e-3, so only slightly).
    naive = log_likelihood(mp.vector_field, x1)
    assert np.abs(naive.log_prob - data.log_prob(x1)).max() > 1e-6


def test_start_time_after_zero_with_exact_log_p_t0():
    data = _mixture()
    mp = MarginalPath(data, Cosine())
    x1 = data.sample(50, rng=3)
    res = log_likelihood(mp.vector_field, x1, t0=0.4, log_p0=lambda x: mp.log_prob(x, 0.4))
    np.testing.assert_allclose(res.log_prob, data.log_prob(x1), rtol=0, atol=1e-8)


@pytest.mark.parametrize("schedule", [Linear(), Cosine()], ids=repr)
def test_single_gaussian_closed_forms(schedule):
    """X_0 is the inverse closed-form flow and ∫ div u dt = ½ log det Σ (S_0 = I, S_1 = Σ)."""
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, COV), schedule)
    x1 = np.random.default_rng(2).standard_normal((30, 2)) * 2.0
    res = log_likelihood(mp.vector_field, x1)
    np.testing.assert_allclose(
        res.x0, gaussian_flow(MEAN, COV, schedule, x1, 0.0, t0=1.0), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(res.delta, 0.5 * np.log(np.linalg.det(COV)), rtol=0, atol=1e-9)


def test_fused_and_plain_callables_agree():
    mp = MarginalPath(_mixture(), Cosine())
    x1 = mp.data.sample(60, rng=3)
    fused = log_likelihood(mp.vector_field, x1, divergence=mp.divergence)
    plain = log_likelihood(
        lambda x, t: mp.vector_field(x, t), x1, divergence=lambda x, t: mp.divergence(x, t)
    )
    np.testing.assert_allclose(fused.log_prob, plain.log_prob, rtol=0, atol=1e-12)
    assert fused.nfe == plain.nfe


@pytest.mark.slow
@pytest.mark.parametrize("method", [name for name, m in METHODS.items() if not m.adaptive])
def test_fixed_step_likelihood_converges_at_the_table_order(method):
    """The backward solve runs the table's method: its error against the exact log p_data
    falls at the table's order, and it calls the field once per stage node per step."""
    mp = MarginalPath(_mixture(), Cosine())
    x1 = mp.data.sample(60, rng=3)
    want = mp.data.log_prob(x1)
    steps = (25, 50, 100)
    errs = []
    for s in steps:
        res = log_likelihood(mp.vector_field, x1, method=method, steps=s)
        errs.append(np.abs(res.log_prob - want).max())
        assert res.nfe == len(METHODS[method].nodes) * s
    slope = np.polyfit(np.log(1 / np.array(steps)), np.log(errs), 1)[0]
    assert abs(slope - METHODS[method].order) < 0.5, (errs, slope)


class _JvpOnly:
    """Exposes only jvp(x, t, v) = ∇u v, from the exact Jacobian."""

    def __init__(self, mp: MarginalPath) -> None:
        self.mp = mp

    def jvp(self, x, t, v):
        return np.einsum("nij,nj->ni", self.mp.jacobian(x, t), v)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["jacobian", "jvp", "fd"])
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(source, probe):
    """Mean over points of (estimate − exact) ∫ div u is within 4 of its standard errors."""
    mp = MarginalPath(_mixture(), Linear())
    x1 = mp.data.sample(150, rng=4)
    exact = log_likelihood(mp.vector_field, x1, method="rk4", steps=40)
    field = mp.vector_field if source != "fd" else (lambda x, t: mp.vector_field(x, t))
    js = _JvpOnly(mp) if source == "jvp" else None
    opts = Hutchinson(n_probes=6, probe=probe, rng=5, jacobian=js)
    est = log_likelihood(field, x1, divergence=opts, method="rk4", steps=40)
    # The trajectory does not depend on the probes: same X_0 as the exact run.
    np.testing.assert_allclose(est.x0, exact.x0, rtol=0, atol=1e-10)
    diff = est.delta - exact.delta
    # Points have independent probes, so the errors are i.i.d. with mean 0 if unbiased.
    se_mean = float(np.std(diff, ddof=1)) / math.sqrt(diff.shape[0])
    assert abs(diff.mean()) < 4 * se_mean, (diff.mean(), se_mean)
    assert se_mean > 1e-3  # the estimate is noisy, so the check above is not vacuous
    # The reported standard errors are calibrated on average: E[stderr²] = E[diff²].
    ratio = float(np.mean(diff**2) / np.mean(est.stderr**2))
    assert 0.6 < ratio < 1.6, ratio
    stages = 4 * 40
    per_call = 1 + (2 * 6 if source == "fd" else 0)
    assert est.nfe == stages * per_call


@pytest.mark.slow
def test_rademacher_is_exact_for_isotropic_jacobian():
    """Single isotropic Gaussian data: ∇u = c_t I, so vᵀ∇u v = c_t d for every ±1 probe."""
    mp = MarginalPath(GaussianMixture.gaussian(MEAN, 0.5), Cosine())
    x1 = mp.data.sample(20, rng=6)
    exact = log_likelihood(mp.vector_field, x1, method="rk4", steps=30)
    est = log_likelihood(mp.vector_field, x1, divergence=Hutchinson(n_probes=3, rng=0),
                         method="rk4", steps=30)  # fmt: skip
    np.testing.assert_allclose(est.delta, exact.delta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.stderr, 0.0, rtol=0, atol=1e-12)
    one = log_likelihood(mp.vector_field, x1, divergence=Hutchinson(rng=0), steps=30,
                         method="rk4")  # fmt: skip
    assert one.stderr is None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rk4", "dop853"])
def test_backends_agree(backend, method):
    mp = MarginalPath(_mixture(), Linear())
    x1 = mp.data.sample(20, rng=7)
    # A loose tolerance keeps the adaptive run short (torch pays a fixed cost per call).
    kw = {"method": method, "steps": 20, "rtol": 1e-6, "atol": 1e-6}
    want = log_likelihood(mp.vector_field, x1, **kw)
    got = log_likelihood(mp.vector_field, backend.asarray(x1), **kw)
    assert type(got.log_prob) is type(backend.asarray(x1))
    tol = 1e-11 if method == "rk4" else 1e-5
    np.testing.assert_allclose(backend.to_numpy(got.log_prob), want.log_prob, rtol=0, atol=tol)


def test_bad_input():
    mp = MarginalPath(_mixture(), Linear())
    x1 = mp.data.sample(5, rng=8)
    u = mp.vector_field
    with pytest.raises(TypeError, match="rng"):
        Hutchinson()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="rng"):
        Hutchinson(rng=None)
    with pytest.raises(ValueError, match="probe must be"):
        Hutchinson(rng=0, probe="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_probes must be"):
        Hutchinson(rng=0, n_probes=0)
    with pytest.raises(TypeError, match="n_probes must be"):
        Hutchinson(rng=0, n_probes=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fd_step"):
        Hutchinson(rng=0, fd_step=-1.0)
    with pytest.raises(TypeError, match="jacobian must expose"):
        Hutchinson(rng=0, jacobian=object())
    with pytest.raises(ValueError, match="divergence must be"):
        log_likelihood(u, x1, divergence="trace")
    with pytest.raises(TypeError, match="apply only to"):
        log_likelihood(u, x1, n_probes=3)
    with pytest.raises(TypeError, match="no divergence method"):
        log_likelihood(lambda x, t: u(x, t), x1)
    with pytest.raises(ValueError, match="t0 must be smaller than t1"):
        log_likelihood(u, x1, t0=0.5, t1=0.5)
    with pytest.raises(ValueError, match="log_p0 is required when t0"):
        log_likelihood(u, x1, t0=0.5)  # N(0, I) is p_0 only
    kw = {"method": "rk4", "steps": 2}
    with pytest.raises(ValueError, match=r"log_p0 must return shape \(5,\)"):
        log_likelihood(u, x1, log_p0=lambda x: x, **kw)
    with pytest.raises(ValueError, match="log_p0 returned NaN"):
        log_likelihood(u, x1, log_p0=lambda x: x[:, 0] * np.nan, **kw)
    with pytest.raises(ValueError, match=r"t1 must be a finite real number >= 0\.0 and <= 1\.0"):
        log_likelihood(u, x1, t1=1.5)
    with pytest.raises(ValueError, match=r"divergence must return shape \(5,\)"):
        log_likelihood(u, x1, divergence=lambda x, t: x)
    with pytest.raises(ValueError, match="field returned shape"):
        log_likelihood(lambda x, t: x[:, :1], x1, divergence=lambda x, t: x[:, 0])
    with pytest.raises(ValueError, match=r"divergence returned non-finite values at t = 1\.0"):
        log_likelihood(u, x1, divergence=lambda x, t: x[:, 0] + np.inf, method="rk4")
    with pytest.raises(TypeError, match="log_p0 must be"):
        log_likelihood(u, x1, log_p0=3.0)


def test_hutchinson_keywords_are_a_deprecated_spelling_of_the_options_object():
    """The 0.1 spelling divergence="hutchinson", n_probes=, rng=, ... gives the same result."""
    mp = MarginalPath(_mixture(), Linear())
    x1 = mp.data.sample(10, rng=8)
    kw = {"method": "rk4", "steps": 4}
    new = log_likelihood(
        mp.vector_field, x1, divergence=Hutchinson(n_probes=2, rng=3, jacobian="fd"), **kw
    )
    with pytest.warns(DeprecationWarning, match="Hutchinson"):
        old = log_likelihood(mp.vector_field, x1, divergence="hutchinson", n_probes=2, rng=3,
                             jacobian_source="fd", **kw)  # fmt: skip
    np.testing.assert_array_equal(old.log_prob, new.log_prob)
    assert old.nfe == new.nfe == 4 * 4 * (1 + 2 * 2)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="rng"):
        log_likelihood(mp.vector_field, x1, divergence="hutchinson")


def test_mlp_field_exact_trace_and_hutchinson():
    """An (untrained) MLP: its exact divergence, a central-difference trace and Hutchinson
    (through its forward-mode Jacobian, or finite differences) agree."""
    from fmref.mlp import MLP

    mlp = MLP(2, (16, 16), rng=0)
    x1 = np.random.default_rng(9).standard_normal((40, 2))
    kw = {"method": "rk4", "steps": 20}
    exact = log_likelihood(mlp, x1, **kw)  # divergence from mlp.divergence

    def fd_trace(x, t, h=1e-5):
        e = np.eye(2)
        return sum((mlp(x + h * e[i], t)[:, i] - mlp(x - h * e[i], t)[:, i]) / (2 * h)
                   for i in range(2))  # fmt: skip

    fd = log_likelihood(mlp, x1, divergence=fd_trace, **kw)
    np.testing.assert_allclose(exact.log_prob, fd.log_prob, rtol=0, atol=1e-7)
    for source in (None, "fd"):
        opts = Hutchinson(n_probes=4, probe="gaussian", rng=1, jacobian=source)
        est = log_likelihood(mlp, x1, divergence=opts, **kw)
        diff = est.delta - exact.delta
        se = float(np.std(diff, ddof=1)) / math.sqrt(diff.shape[0])
        assert abs(diff.mean()) < 4 * se and se > 0, (source, diff.mean(), se)
    # sample() reads the dimension from the MLP.
    from fmref.samplers import sample

    assert sample(mlp, 5, rng=0, method="euler", steps=2).x.shape == (5, 2)
