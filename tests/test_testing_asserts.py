"""fmref.testing assert helpers: pass on exact implementations, fail informatively otherwise."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref import Cosine, GaussianMixture, Linear, MarginalPath, SqrtBeta, eight_gaussians
from fmref._xp import namespace
from fmref.guidance import guidance_weight
from fmref.schedules import SCHEDULES
from fmref.testing import (
    TOLERANCES,
    assert_cfg_close,
    assert_conditional_path_close,
    assert_log_likelihood_close,
    assert_quantity_close,
    assert_score_close,
    assert_vector_field_close,
    default_tolerance,
    oracle_mixture,
)

# An isotropic 2-D mixture and a field written independently of fmref's kernel:
# S_k = (α² s_k + β²) I, u_k = α̇ μ_k + (α α̇ s_k + β β̇)/(α² s_k + β²) (x − α μ_k), γ by scipy.
W = np.array([0.2, 0.5, 0.3])
MU = np.array([[-2.0, 0.5], [1.5, 1.0], [0.0, -2.5]])
S2 = np.array([0.3, 1.2, 0.6])
DATA = GaussianMixture(W, MU, S2)
MP = MarginalPath(DATA, Cosine())


def cosine_coeffs(t: np.ndarray) -> tuple[np.ndarray, ...]:
    h = math.pi / 2
    return np.sin(h * t), np.cos(h * t), h * np.cos(h * t), -h * np.sin(h * t)


def _reference(x: Any, t: Any, per_component: Any) -> Any:
    """Σ_k γ_k f_k(x_i) for MP, γ by scipy densities, f_k = per_component(k, x_i, α, β, α̇, β̇)."""
    xn, tn = np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64)
    a, b, ad, bd = cosine_coeffs(tn)
    out = np.zeros_like(xn)
    for i in range(xn.shape[0]):
        logs = [
            np.log(w)
            + multivariate_normal(a[i] * mu, (a[i] ** 2 * s + b[i] ** 2) * np.eye(2)).logpdf(xn[i])
            for w, mu, s in zip(W, MU, S2, strict=True)
        ]
        g = np.exp(np.array(logs) - logsumexp(logs))
        for k in range(3):
            out[i] += g[k] * per_component(k, xn[i], a[i], b[i], ad[i], bd[i])
    return out


def reference_field(x: Any, t: Any) -> Any:
    """Independent u_t for MP: u_k = α̇ μ_k + (αα̇ s_k + ββ̇)/(α² s_k + β²) (x − α μ_k)."""

    def u_k(k: int, xi: Any, a: float, b: float, ad: float, bd: float) -> Any:
        gain = (a * ad * S2[k] + b * bd) / (a**2 * S2[k] + b**2)
        return ad * MU[k] + gain * (xi - a * MU[k])

    return _reference(x, t, u_k)


def reference_posterior_mean(x: Any, t: Any) -> Any:
    """Independent E[z | x] for MP: e_k = μ_k + α s_k/(α² s_k + β²) (x − α μ_k)."""

    def e_k(k: int, xi: Any, a: float, b: float, ad: float, bd: float) -> Any:
        return MU[k] + a * S2[k] / (a**2 * S2[k] + b**2) * (xi - a * MU[k])

    return _reference(x, t, e_k)


def test_an_independent_exact_field_passes_default_float64_tolerances() -> None:
    assert_vector_field_close(reference_field, MP, n=16)


def test_backends_pass_and_time_is_per_row(backend: Any) -> None:
    seen: dict[str, Any] = {}

    def fn(x: Any, t: Any) -> Any:
        seen["xp"], seen["t"] = namespace(x, t), backend.to_numpy(t)
        return MP.vector_field(x, t)

    like = backend.asarray(np.zeros(1))
    assert_vector_field_close(fn, MP, n=8, like=like)
    assert seen["xp"] is namespace(like)
    # 8 samples and 2 tail points (n // 4) at each default time, both ends included.
    want = np.repeat([0.0, 1e-3, 1e-2, 0.25, 0.5, 0.75, 0.99, 0.999, 1.0], 10)
    np.testing.assert_allclose(seen["t"], want, rtol=0, atol=0)


def test_float32_implementations_pass_with_float32_defaults(backend32: Any) -> None:
    like = backend32.asarray(np.zeros(1))
    assert_score_close(lambda x, t: MP.score(x, t), MP, n=16, like=like)
    # A float32 field that is wrong by 1e-3 relative still fails.
    with pytest.raises(AssertionError, match=r"rtol=0\.0001, atol=1e-05"):
        assert_score_close(lambda x, t: MP.score(x, t) * 1.001, MP, n=16, like=like)


def test_failure_reports_worst_point_values_and_ratio() -> None:
    delta, row, col = 3e-6, 21, 1
    captured: dict[str, np.ndarray] = {}

    def fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        u = np.array(MP.vector_field(x, t))
        captured["x"], captured["t"], captured["u"] = x, t, u.copy()
        u[row, col] += delta
        return u

    with pytest.raises(AssertionError) as info:
        assert_vector_field_close(fn, MP, n=10, times=[0.0, 0.25, 0.5, 0.75, 1.0], tails=0)
    msg = str(info.value)
    e = captured["u"][row, col]
    ratio = delta / (1e-9 + 1e-7 * abs(e))
    assert msg.startswith("assert_vector_field_close: 1 of 50 points exceed")
    assert f"worst point is row {row}" in msg and f"t = {captured['t'][row]:.10g}" in msg
    assert f"{e:.10g}" in msg and f"{e + delta:.10g}" in msg
    got = float(re.search(r"= ([0-9.e+-]+) in component 1", msg).group(1))
    assert got == pytest.approx(ratio, rel=1e-2, abs=0)
    assert msg.endswith(f"failing points by time: t = {captured['t'][row]:.6g}: 1/10")


def test_quantile_tolerates_a_few_bad_points_but_reports_the_worst() -> None:
    def fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        u = np.array(MP.vector_field(x, t))
        u[:3] += 1.0  # 3 of 200 points are off
        return u

    assert_vector_field_close(fn, MP, n=40, quantile=0.95)
    with pytest.raises(AssertionError, match="3 of 450 points"):
        assert_vector_field_close(fn, MP, n=40)


def test_nan_shape_and_none_are_caught() -> None:
    with pytest.raises(AssertionError, match="= inf"):
        assert_vector_field_close(lambda x, t: MP.vector_field(x, t) * np.nan, MP, n=4)
    with pytest.raises(ValueError, match=r"shape \(45, 2\)"):  # 9 times × (4 + 1 tail)
        assert_vector_field_close(lambda x, t: np.zeros((45, 3)), MP, n=4)
    with pytest.raises(TypeError, match="returned None"):
        assert_vector_field_close(lambda x, t: None, MP, n=4)
    with pytest.raises(ValueError, match="times"):
        assert_vector_field_close(lambda x, t: x, MP, times=[1.5])
    with pytest.raises(ValueError, match="quantity"):
        assert_quantity_close(lambda x, t: x, MP, "velocity")
    with pytest.raises(ValueError, match="at most one"):
        assert_vector_field_close(lambda x, t: x, MP, like=np.zeros(1), to_impl=np.asarray)


def test_a_wrong_field_fails_score_and_scalar_quantities() -> None:
    with pytest.raises(AssertionError, match="assert_score_close"):
        assert_score_close(lambda x, t: MP.vector_field(x, t), MP, n=8)

    # An independent divergence (central differences of u, h = 1e-5: error ~1e-10) passes.
    def div_by_differences(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        h, d = 1e-5, x.shape[1]
        e = h * np.eye(d)
        return sum(
            (MP.vector_field(x + e[i], t)[:, i] - MP.vector_field(x - e[i], t)[:, i]) / (2 * h)
            for i in range(d)
        )

    assert_quantity_close(div_by_differences, MP, "divergence", n=8, rtol=1e-6, atol=1e-6)


def test_dirac_data_default_times_leave_out_t_one() -> None:
    mp = MarginalPath(GaussianMixture.empirical(MU), Linear())
    seen: list[float] = []

    def fn(x: np.ndarray, t: np.ndarray) -> Any:
        seen.extend(np.unique(t).tolist())
        return mp.vector_field(x, t)

    assert_vector_field_close(fn, mp, n=4)
    assert seen == [0.0, 1e-3, 1e-2, 0.25, 0.5, 0.75, 0.99, 0.999]


def test_posterior_mean_by_its_name_and_its_deprecated_01_name() -> None:
    assert_quantity_close(reference_posterior_mean, MP, "posterior_mean", n=8)
    wrong = lambda x, t: 1.01 * reference_posterior_mean(x, t)  # noqa: E731
    with pytest.warns(DeprecationWarning, match="'x_hat' → 'posterior_mean'"):
        assert_quantity_close(reference_posterior_mean, MP, "x_hat", n=8)
    with pytest.raises(AssertionError, match=r"assert_quantity_close\[posterior_mean\]"):
        assert_quantity_close(wrong, MP, "posterior_mean", n=8)


def test_a_quantity_defined_before_one_only_leaves_out_t_one() -> None:
    seen: list[float] = []

    def fn(x: np.ndarray, t: np.ndarray) -> Any:
        seen.extend(np.unique(t).tolist())
        return MP.cfm_floor_integrand(x, t)

    assert_quantity_close(fn, MP, "cfm_floor_integrand", n=4)
    assert seen == [0.0, 1e-3, 1e-2, 0.25, 0.5, 0.75, 0.99, 0.999]


def _sample(alpha: Any, beta: Any) -> Any:
    return lambda z, e, t: alpha(t)[:, None] * z + beta(t)[:, None] * e


def test_conditional_path_exact_passes_and_swaps_fail() -> None:
    h = math.pi / 2
    sample = _sample(lambda t: np.sin(h * t), lambda t: np.cos(h * t))
    target = _sample(lambda t: h * np.cos(h * t), lambda t: -h * np.sin(h * t))
    assert_conditional_path_close(sample, target, Cosine(), data=DATA)
    swapped = _sample(lambda t: np.cos(h * t), lambda t: np.sin(h * t))
    with pytest.raises(AssertionError, match=r"\[sample_fn\].*\n  t = .*z = .*eps = "):
        assert_conditional_path_close(swapped, None, Cosine())
    with pytest.raises(AssertionError, match=r"\[target_fn\]"):
        assert_conditional_path_close(None, sample, Cosine())
    with pytest.raises(ValueError, match="at least one"):
        assert_conditional_path_close(None, None, Cosine())


def test_conditional_target_leaves_out_infinite_beta_dot(backend: Any) -> None:
    seen: list[np.ndarray] = []

    def target(z: Any, e: Any, t: Any) -> Any:
        xp = namespace(z)
        seen.append(backend.to_numpy(t))
        return z - 0.5 / xp.sqrt(1 - t)[:, None] * e  # SqrtBeta: α̇ = 1, β̇ = −1/(2√(1−t))

    assert_conditional_path_close(None, target, SqrtBeta(), like=backend.asarray(np.zeros(1)))
    assert seen[0].max() == 0.999


def _scipy_log_prob(x: np.ndarray) -> np.ndarray:
    comps = [
        np.log(w) + multivariate_normal(mu, s * np.eye(2)).logpdf(x)
        for w, mu, s in zip(W, MU, S2, strict=True)
    ]
    return logsumexp(np.stack(comps), axis=0)


def test_log_likelihood_helper() -> None:
    assert_log_likelihood_close(_scipy_log_prob, MP)
    assert_log_likelihood_close(_scipy_log_prob, DATA, n=8, rng=np.random.default_rng(1))
    with pytest.raises(AssertionError, match=r"assert_log_likelihood_close.*\n  x = .*\(t = 1\)"):
        assert_log_likelihood_close(lambda x: _scipy_log_prob(x) + 1e-3, MP)
    with pytest.raises(ValueError, match="no density"):
        assert_log_likelihood_close(lambda x: x[:, 0], GaussianMixture.empirical(MU))


def test_exact_flow_likelihood_passes_default_tolerance() -> None:
    likelihood = pytest.importorskip("fmref.likelihood", reason="fmref.likelihood not built yet")

    def flow_log_prob(x1: np.ndarray) -> Any:
        res = likelihood.log_likelihood(
            MP.vector_field, x1, divergence=MP.divergence, rtol=1e-10, atol=1e-10
        )
        return res.log_prob

    assert_log_likelihood_close(flow_log_prob, MP, n=16)


def test_default_tolerance_table() -> None:
    torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
    assert default_tolerance(np.float64) == TOLERANCES["float64"] == (1e-7, 1e-9)
    assert default_tolerance(torch.float32) == (1e-4, 1e-5)
    assert default_tolerance(torch.bfloat16) == (1e-2, 1e-3)
    assert default_tolerance(np.float32, rtol=0.1) == (0.1, 1e-5)
    assert default_tolerance(np.float64, scale=100.0) == pytest.approx(
        (1e-5, 1e-7), rel=1e-12, abs=0
    )
    with pytest.raises(ValueError, match="rtol"):
        default_tolerance(np.float64, rtol=-1.0)


def test_eight_gaussians_points_have_non_negligible_density() -> None:
    mp = MarginalPath(eight_gaussians(), Linear())
    seen: list[np.ndarray] = []

    def fn(x: np.ndarray, t: np.ndarray) -> Any:
        seen.append(mp.log_prob(x, t))
        return mp.score(x, t)

    assert_score_close(fn, mp, n=200, tails=0)
    # Exact samples of p_t: no point sits in the far tail (there log p_t would be ≪ −25).
    assert np.all(seen[0] > -25.0)


# -- reach: the default design catches the known escapes; correct code passes ------------------


def _vectorised_field(
    weights: Any, means: Any, variances: Any, *, naive_softmax: bool = False, clamp: Any = None
) -> Any:
    """u_t for isotropic data under Linear (α = t, β = 1 − t), in NumPy, sharing no fmref code.

    u_k = μ_k + (t s_k − (1 − t))/(t² s_k + (1 − t)²) (x − t μ_k), mixed by softmax of
    log π_k + log N(x; t μ_k, (t² s_k + (1 − t)²) I). ``naive_softmax``: exp/sum without
    subtracting the max (NaN far from every mode); ``clamp(t)``: a branch on t (the bug).
    """
    w, mu, s = (np.asarray(a, dtype=np.float64) for a in (weights, means, variances))

    def field(x: Any, t: Any) -> Any:
        x, t = np.asarray(x), np.asarray(t)
        if clamp is not None:
            t = clamp(t)
        tc = t[:, None]
        var = tc**2 * s + (1 - tc) ** 2  # (m, k)
        r = x[:, None, :] - tc[..., None] * mu  # (m, k, d)
        d = x.shape[1]
        logits = np.log(w) - 0.5 * (r**2).sum(-1) / var - 0.5 * d * np.log(2 * np.pi * var)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if naive_softmax:
                e = np.exp(logits)
                gam = e / e.sum(1, keepdims=True)
            else:
                e = np.exp(logits - logits.max(1, keepdims=True))
                gam = e / e.sum(1, keepdims=True)
        gain = (tc * s - (1 - tc)) / var
        u_k = mu + gain[..., None] * r
        return (gam[..., None] * u_k).sum(1)

    return field


# Unequal weights (0.6, 0.3, 0.1) and distinct variances: a weight bug changes the field.
W3, MU3, S3 = (
    np.array([0.6, 0.3, 0.1]),
    np.array([[-2.0, 0.5], [1.5, 1.0], [0.0, -2.5]]),
    [
        0.3,
        1.2,
        0.6,
    ],
)
MP3 = MarginalPath(GaussianMixture(W3, MU3, np.array(S3)), Linear())


def test_the_independent_numpy_field_passes_the_defaults() -> None:
    assert_vector_field_close(_vectorised_field(W3, MU3, S3), MP3)


@pytest.mark.parametrize(
    ("bug", "field", "where"),
    [
        ("softmax without max-subtraction", {"naive_softmax": True}, "a tail point"),
        (
            "t clamped to 0.98 (wrong only for t > 0.98)",
            {"clamp": lambda t: np.where((t > 0.98) & (t < 1), 0.98, t)},
            "t = 0.99",
        ),
        (
            "t clamped to 0.02 (wrong only for t < 0.02)",
            {"clamp": lambda t: np.where((t > 0) & (t < 0.02), 0.02, t)},
            "t = 0",
        ),
    ],
)
def test_the_known_escapes_are_caught_at_the_defaults(bug: str, field: Any, where: str) -> None:
    with pytest.raises(AssertionError, match="failing points by time") as info:
        assert_vector_field_close(_vectorised_field(W3, MU3, S3, **field), MP3)
    assert where in str(info.value), bug
    # The old design (samples only at 0, ¼, ½, ¾, 1) let each of them pass.
    assert_vector_field_close(
        _vectorised_field(W3, MU3, S3, **field), MP3, times=[0, 0.25, 0.5, 0.75, 1], tails=0
    )


def test_a_weight_bug_is_caught_with_unequal_weights_and_hidden_by_equal_ones() -> None:
    equal_w = np.full(3, 1 / 3)
    with pytest.raises(AssertionError, match="exceed the tolerance"):
        assert_vector_field_close(_vectorised_field(equal_w, MU3, S3), MP3)
    # With equal weights in the data (eight_gaussians, random_mixture's default) the same bug
    # is invisible: use unequal weights, e.g. fmref.testing.oracle_mixture().
    mp_equal = MarginalPath(GaussianMixture(equal_w, MU3, np.array(S3)), Linear())
    assert_vector_field_close(_vectorised_field(np.full(3, 0.5), MU3, S3), mp_equal)


def test_the_default_design_reaches_both_ends_and_the_far_tails() -> None:
    seen: dict[str, np.ndarray] = {}

    def fn(x: np.ndarray, t: np.ndarray) -> Any:
        seen["x"], seen["t"] = x, t
        return MP3.vector_field(x, t)

    assert_vector_field_close(fn, MP3, n=20)
    x, t = seen["x"], seen["t"]
    assert sorted(set(t.tolist())) == [0.0, 1e-3, 1e-2, 0.25, 0.5, 0.75, 0.99, 0.999, 1.0]
    # Per time: 20 samples then 5 tail points (10 to 50 σ), each ≥ 10 σ of every component.
    tails = np.tile(np.r_[np.zeros(20), np.ones(5)], 9).astype(bool)
    for i in np.flatnonzero(tails):
        sd = np.sqrt(t[i] ** 2 * np.asarray(S3) + (1 - t[i]) ** 2)
        dist = np.linalg.norm(x[i] - t[i] * MU3, axis=1)
        assert np.all(dist >= 10 * sd.max() * (1 - 1e-12))
    far = [np.min(np.linalg.norm(x[i] - t[i] * MU3, axis=1)) for i in np.flatnonzero(tails)]
    assert max(far) > 40.0  # beyond the ~39 σ where every Gaussian density underflows


def test_tail_point_messages_and_explicit_points() -> None:
    naive = _vectorised_field(W3, MU3, S3, naive_softmax=True)
    with pytest.raises(AssertionError, match=r"a tail point, far from every mode"):
        assert_vector_field_close(naive, MP3)
    # x=: the user's own points, at every time; the exact field passes, the bug fails there.
    pts = np.array([[0.0, 0.0], [40.0, -30.0]])
    assert_vector_field_close(_vectorised_field(W3, MU3, S3), MP3, x=pts, times=[0.5])
    with pytest.raises(AssertionError, match=r"1 of 2 points.*\n  t = 0.5, x = \[40, -30\]"):
        assert_vector_field_close(naive, MP3, x=pts, times=[0.5])
    with pytest.raises(ValueError, match=r"x must have shape \(m, 2\)"):
        assert_vector_field_close(naive, MP3, x=np.zeros((3, 3)))


def test_precision_comes_from_like_not_from_the_result() -> None:
    torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
    f64, f32 = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float32)

    def in_float32(x: Any, t: Any) -> Any:  # computes in float32, returns float64
        return MP3.vector_field(x.float(), t.float()).double()

    with pytest.raises(AssertionError, match="float32 rounding: is fn computing in float32"):
        assert_vector_field_close(in_float32, MP3, like=f64)
    with pytest.raises(AssertionError, match="the result is float32 but the test asks for float64"):
        assert_vector_field_close(
            lambda x, t: MP3.vector_field(x.float(), t.float()), MP3, like=f64
        )
    # Asked for float32 (like= or precision=), the float32 computation passes.
    assert_vector_field_close(lambda x, t: MP3.vector_field(x, t), MP3, like=f32)
    assert_vector_field_close(in_float32, MP3, like=f64, precision="float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        assert_vector_field_close(in_float32, MP3, precision="float8")


def _torch_example() -> Any:
    torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
    from fmref.testing import torch_reference

    return torch, torch_reference


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("schedule", ["linear", "cosine", "vp", "sqrt_beta"])
def test_an_independent_torch_implementation_passes_in_both_precisions(
    dtype: str, schedule: str
) -> None:
    torch, tef = _torch_example()
    data = oracle_mixture(2)
    params = {"b": 0.1, "B": 20.0} if schedule == "vp" else {}
    mp = MarginalPath(data, SCHEDULES[schedule](**params))
    dt = getattr(torch, dtype)
    path = tef.ExactPath(schedule, params, data.weights, data.means, data.covs)
    path.logw, path.mu, path.cov = path.logw.to(dt), path.mu.to(dt), path.cov.to(dt)
    like = torch.zeros(1, dtype=dt)
    assert_vector_field_close(lambda x, t: path.vector_field(x, t).detach(), mp, like=like)
    assert_score_close(lambda x, t: tef._grad(path.log_prob, x, t, "x"), mp, like=like)
    for q, f in (
        ("log_prob", lambda x, t: path.log_prob(x, t).detach()),
        ("divergence", lambda x, t: tef.divergence(path, x, t).detach()),
        ("dlog_prob_dt", lambda x, t: tef._grad(path.log_prob, x, t, "t")),
    ):
        assert_quantity_close(f, mp, q, like=like)
    # The same code with a realistic slip fails at the same defaults.
    wrong = tef.ExactPath(schedule, params, np.full(3, 1 / 3), data.means, data.covs)
    wrong.logw, wrong.mu, wrong.cov = wrong.logw.to(dt), wrong.mu.to(dt), wrong.cov.to(dt)
    with pytest.raises(AssertionError):
        assert_vector_field_close(lambda x, t: wrong.vector_field(x, t).detach(), mp, like=like)


# -- labelled data: y= and the CFG field ----------------------------------------------------
LAB = oracle_mixture(2, labelled=True)
LMP = MarginalPath(LAB, Linear())


def _class_field(torch: Any, tef: Any, y: int) -> Any:
    """u_t(x | y) by the torch example on the components of class y (weights renormalised)."""
    keep = LAB.labels == y
    w = LAB.weights[keep] / LAB.weights[keep].sum()
    return tef.ExactPath("linear", {}, w, LAB.means[keep], LAB.covs[keep])


def test_conditional_fields_by_y_and_classifier_quantities_need_y() -> None:
    torch, tef = _torch_example()
    paths = {y: _class_field(torch, tef, y) for y in (0, 1)}

    def cond(x: Any, t: Any, y: Any) -> Any:
        out = torch.empty_like(x)
        for c, p in paths.items():
            rows = y == c
            out[rows] = p.vector_field(x[rows], t[rows]).detach()
        return out

    like = torch.zeros(1, dtype=torch.float64)
    assert_vector_field_close(cond, LMP, y=[0, 1], like=like)
    swapped = lambda x, t, y: cond(x, t, 1 - y)  # noqa: E731
    with pytest.raises(AssertionError, match=r"y = [01]"):
        assert_vector_field_close(swapped, LMP, y=[0, 1], like=like)
    with pytest.raises(ValueError, match="pass y="):
        assert_quantity_close(lambda x, t: x[:, 0], LMP, "classifier_log_prob")
    with pytest.raises(ValueError, match="no labels"):
        assert_vector_field_close(cond, MP3, y=0)


def test_the_cfg_recipe_of_the_docs_in_ten_lines() -> None:
    torch, tef = _torch_example()
    uncond = tef.ExactPath("linear", {}, LAB.weights, LAB.means, LAB.covs)
    paths = {y: _class_field(torch, tef, y) for y in (0, 1)}

    def cond(x: Any, t: Any, y: Any) -> Any:
        out = torch.empty_like(x)
        for c, p in paths.items():
            out[y == c] = p.vector_field(x[y == c], t[y == c]).detach()
        return out

    def my_cfg(x: Any, t: Any, y: Any, w: float = 2.5) -> Any:  # (1 − w) u + w u_y
        return (1 - w) * uncond.vector_field(x, t).detach() + w * cond(x, t, y)

    like = torch.zeros(1, dtype=torch.float64)
    assert_cfg_close(my_cfg, LMP, y=[0, 1], w=2.5, like=like)
    # The diffusers spelling u + ω (u_y − u) is the same field with w = ω ...
    assert_cfg_close(my_cfg, LMP, y=[0, 1], w=guidance_weight(2.5, convention="delta"), like=like)
    # ... Ho & Salimans' (1 + ω) u_y − ω u with ω = 2.5 is w = 3.5, not 2.5: caught.
    with pytest.raises(AssertionError, match="assert_cfg_close"):
        assert_cfg_close(my_cfg, LMP, y=[0, 1], w=guidance_weight(2.5, convention="ho"), like=like)
    with pytest.raises(ValueError, match="w must be >= 0"):
        assert_cfg_close(my_cfg, LMP, y=0, w=-1.0)
    with pytest.raises(ValueError, match="labelled data"):
        assert_cfg_close(my_cfg, MP3, y=0, w=1.0)


def test_star_import_works_without_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"  # any import of it now fails
        "from fmref.testing import *\n"
        "assert callable(assert_vector_field_close) and callable(assert_cfg_close)\n"
        "assert 'strategies' not in dir()\n"
        "try:\n"
        "    import fmref.testing.strategies\n"
        "except ImportError:\n"
        "    print('strategies need hypothesis')\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "strategies need hypothesis"
