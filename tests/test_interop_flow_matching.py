"""Worked examples with facebookresearch/flow_matching: its AffineProbPath (CondOT, Cosine, VP,
LinearVP, Polynomial schedulers) against fmref's conditional path with the same z, ε, t; its
velocity/x_1/ε conversions against fmref.conversions; and its ODE likelihood against the exact
log p_data with the exact field as the model."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
fm_path = pytest.importorskip(
    "flow_matching.path", reason="flow_matching not installed (pip install flow_matching --no-deps)"
)
fm_sched = pytest.importorskip("flow_matching.path.scheduler")
fm_solver = pytest.importorskip(
    "flow_matching.solver", reason="flow_matching's solver needs torchdiffeq"
)

import fmref  # noqa: E402
from fmref import conversions as cv  # noqa: E402
from fmref.adapters import (  # noqa: E402
    as_flow_matching_model,
    flow_matching_schedule,
    from_flow_matching_sample,
)
from fmref.testing import assert_conditional_path_close, assert_log_likelihood_close  # noqa: E402

SCHEDULERS = {
    "CondOT": lambda: fm_sched.CondOTScheduler(),
    "Cosine": lambda: fm_sched.CosineScheduler(),
    "VP": lambda: fm_sched.VPScheduler(),
    "LinearVP": lambda: fm_sched.LinearVPScheduler(),
    "Polynomial3": lambda: fm_sched.PolynomialConvexScheduler(n=3),
}
DATA = fmref.GaussianMixture(
    [0.3, 0.7], [[-2.0, 1.0], [1.5, -0.5]], [[[0.6, 0.2], [0.2, 0.4]], [[0.9, -0.3], [-0.3, 0.5]]]
)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_affine_prob_path_matches_fmref(name: str, dtype: str) -> None:
    scheduler = SCHEDULERS[name]()
    path = fm_path.AffineProbPath(scheduler)

    def sample(z: Any, eps: Any, t: Any) -> Any:
        return path.sample(x_0=eps, x_1=z, t=t).x_t  # flow_matching: x_0 noise, x_1 data

    def target(z: Any, eps: Any, t: Any) -> Any:
        return path.sample(x_0=eps, x_1=z, t=t).dx_t

    like = torch.zeros(1, dtype=getattr(torch, dtype))
    schedule = flow_matching_schedule(scheduler)
    assert_conditional_path_close(sample, target, schedule, data=DATA, like=like)
    # Swapping x_0 and x_1 (a common convention slip) is caught.
    with pytest.raises(AssertionError, match="sample_fn"):
        assert_conditional_path_close(
            lambda z, e, t: path.sample(x_0=z, x_1=e, t=t).x_t,
            None,
            schedule,
            data=DATA,
            like=like,
        )


def test_path_sample_renaming() -> None:
    path = fm_path.AffineProbPath(fm_sched.CosineScheduler())
    g = torch.Generator().manual_seed(0)
    z, eps = (
        torch.randn(5, 2, generator=g, dtype=torch.float64),
        torch.randn(5, 2, generator=g, dtype=torch.float64),
    )
    t = torch.rand(5, generator=g, dtype=torch.float64) * 0.9
    s = from_flow_matching_sample(path.sample(x_0=eps, x_1=z, t=t))
    fp = fmref.GaussianPath(fmref.Cosine())
    np.testing.assert_allclose(
        s["x"].numpy(), fp.sample(z.numpy(), t.numpy(), eps.numpy()), rtol=1e-14, atol=1e-14
    )
    np.testing.assert_allclose(
        s["target"].numpy(),
        fp.target(s["z"].numpy(), s["eps"].numpy(), t.numpy()),
        rtol=1e-13,
        atol=1e-13,
    )


@pytest.mark.parametrize("name", ["CondOT", "Cosine", "VP"])
def test_conversions_agree_with_fmref(name: str) -> None:
    scheduler = SCHEDULERS[name]()
    path = fm_path.AffineProbPath(scheduler)
    sched = flow_matching_schedule(scheduler)
    mp = fmref.MarginalPath(DATA, sched)
    t = 0.45
    x = mp.sample(16, t, rng=0)
    r = mp.evaluate(x, t, ("posterior_mean", "noise_posterior_mean", "vector_field"))
    tt = torch.full((16, 1), t, dtype=torch.float64)
    X, XH, EH, U = (
        torch.from_numpy(np.ascontiguousarray(a))
        for a in (x, r["posterior_mean"], r["noise_posterior_mean"], r["vector_field"])
    )
    pairs = {
        "target_to_velocity": (
            path.target_to_velocity(x_1=XH, x_t=X, t=tt),
            cv.velocity_from_x_hat(sched, x, t, r["posterior_mean"]),
            r["vector_field"],
        ),
        "velocity_to_target": (
            path.velocity_to_target(velocity=U, x_t=X, t=tt),
            cv.x_hat_from_velocity(sched, x, t, r["vector_field"]),
            r["posterior_mean"],
        ),
        "epsilon_to_target": (
            path.epsilon_to_target(epsilon=EH, x_t=X, t=tt),
            cv.x_hat_from_eps_hat(sched, x, t, r["noise_posterior_mean"]),
            r["posterior_mean"],
        ),
        "target_to_epsilon": (
            path.target_to_epsilon(x_1=XH, x_t=X, t=tt),
            cv.eps_hat_from_x_hat(sched, x, t, r["posterior_mean"]),
            r["noise_posterior_mean"],
        ),
        "epsilon_to_velocity": (
            path.epsilon_to_velocity(epsilon=EH, x_t=X, t=tt),
            cv.velocity_from_x_hat(
                sched, x, t, cv.x_hat_from_eps_hat(sched, x, t, r["noise_posterior_mean"])
            ),
            r["vector_field"],
        ),
        "velocity_to_epsilon": (
            path.velocity_to_epsilon(velocity=U, x_t=X, t=tt),
            cv.eps_hat_from_x_hat(
                sched, x, t, cv.x_hat_from_velocity(sched, x, t, r["vector_field"])
            ),
            r["noise_posterior_mean"],
        ),
    }
    for name_, (theirs, ours, exact) in pairs.items():
        np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-9, atol=1e-9, err_msg=name_)
        np.testing.assert_allclose(theirs.numpy(), exact, rtol=1e-8, atol=1e-8, err_msg=name_)


def _torch_field(schedule: str, params: dict[str, float]) -> Any:
    example = Path(__file__).resolve().parents[1] / "examples" / "torch_exact_field.py"
    spec = importlib.util.spec_from_file_location("torch_exact_field", example)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ExactPath(schedule, params, DATA.weights, DATA.means, DATA.covs)


@pytest.fixture
def one_thread() -> Any:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _dopri5_log_prob(solver: Any, x1: Any) -> Any:
    """flow_matching's exact-divergence likelihood of x1 (dopri5 at 1e-8, p_0 = N(0, I))."""

    def log_p0(x: Any) -> Any:
        return -0.5 * (x**2).sum(1) - x.shape[1] * 0.5 * math.log(2 * math.pi)

    _, logp = solver.compute_likelihood(
        x_1=x1,
        log_p0=log_p0,
        step_size=None,
        method="dopri5",
        atol=1e-8,
        rtol=1e-8,
        time_grid=torch.tensor([1.0, 0.0], dtype=torch.float64),
        exact_divergence=True,
    )
    return logp.detach()


@pytest.mark.slow
def test_ode_likelihood_matches_exact_log_p_data(one_thread) -> None:
    # CondOT: p_0 = N(0, I) exactly, so log p_1 = log p_0(X_0) − ∫ div u is exact up to the solver.
    exact = _torch_field("linear", {})
    solver = fm_solver.ODESolver(velocity_model=as_flow_matching_model(exact.vector_field))

    def flow_log_prob(x1: Any, solver: Any = solver) -> Any:
        return _dopri5_log_prob(solver, x1)

    mp = fmref.MarginalPath(DATA, fmref.Linear())
    like = torch.zeros(1, dtype=torch.float64)
    assert_log_likelihood_close(flow_log_prob, mp, n=8, like=like)
    # A slightly wrong model (the field scaled by 0.98) is caught.
    wrong = fm_solver.ODESolver(
        velocity_model=as_flow_matching_model(lambda x, t: 0.98 * exact.vector_field(x, t))
    )
    with pytest.raises(AssertionError, match="assert_log_likelihood_close"):
        assert_log_likelihood_close(lambda x: flow_log_prob(x, wrong), mp, n=8, like=like)


@pytest.mark.slow
def test_fmref_field_likelihood_and_dopri5_sampling(one_thread) -> None:
    """fmref's own field, unmodified: exact-divergence likelihood by autograd, dopri5 sampling.

    compute_likelihood differentiates the model with torch autograd (exact_divergence=True), and
    dopri5 probes t past 1 (the wrapper clamps it), so both failed before fmref traced cleanly.
    """
    mp = fmref.MarginalPath(DATA, fmref.Linear())
    solver = fm_solver.ODESolver(velocity_model=as_flow_matching_model(mp.vector_field))

    def flow_log_prob(x1: Any, solver: Any = solver) -> Any:
        return _dopri5_log_prob(solver, x1)

    like = torch.zeros(1, dtype=torch.float64)
    assert_log_likelihood_close(flow_log_prob, mp, n=8, like=like)
    wrong = fm_solver.ODESolver(
        velocity_model=as_flow_matching_model(lambda x, t: 0.98 * mp.vector_field(x, t))
    )
    with pytest.raises(AssertionError, match="assert_log_likelihood_close"):
        assert_log_likelihood_close(lambda x: flow_log_prob(x, wrong), mp, n=8, like=like)

    # dopri5 sampling from p_0 = N(0, I) at t = 0 to t = 1: the exact flow maps noise to data,
    # so the endpoints' mean and covariance are the mixture's (closed-form moments, with the
    # mean's Monte Carlo standard error).
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    x1 = solver.sample(
        x_init=x0,
        step_size=None,
        method="dopri5",
        atol=1e-7,
        rtol=1e-7,
        time_grid=torch.tensor([0.0, 1.0], dtype=torch.float64),
    )
    mean = DATA.weights @ DATA.means
    cov = sum(
        w * (c + np.outer(m - mean, m - mean))
        for w, m, c in zip(DATA.weights, DATA.means, DATA.covs, strict=True)
    )
    got = x1.numpy()
    se = np.sqrt(np.diag(cov) / got.shape[0])
    np.testing.assert_allclose(got.mean(0), mean, rtol=0, atol=5 * se.max())
    np.testing.assert_allclose(np.cov(got.T), cov, rtol=0.1, atol=0.05)
    # an endpoint one step short (t = 0.5) is not p_data: its spread is too wide, caught
    short = solver.sample(
        x_init=x0,
        step_size=None,
        method="dopri5",
        atol=1e-7,
        rtol=1e-7,
        time_grid=torch.tensor([0.0, 0.5], dtype=torch.float64),
    )
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(np.cov(short.numpy().T), cov, rtol=0.1, atol=0.05)


def test_flow_matching_model_clamps_t() -> None:
    """t beyond [0, 1] (dopri5's probes) evaluates the field at the nearest end of [0, 1]."""
    mp = fmref.MarginalPath(DATA, fmref.Linear())
    model = as_flow_matching_model(mp.vector_field)
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    got = model(x=x, t=torch.tensor(1.2, dtype=torch.float64))
    torch.testing.assert_close(got, mp.vector_field(x, 1.0), rtol=1e-14, atol=0)
    got = model(x=x, t=torch.tensor(-0.1, dtype=torch.float64))
    torch.testing.assert_close(got, mp.vector_field(x, 0.0), rtol=1e-14, atol=0)
