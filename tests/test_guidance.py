"""Classifier-free guidance, classifier guidance and the tilted family, held to the facts.

Independent routes: finite differences in float64 (divergence, Jacobian, tilted score), the
score identity (classifier guidance) against the field combination (CFG), scipy quadrature
of the 1-D normaliser and importance sampling against grid quadrature in 2-D, and the
likelihood ODE (fmref.log_likelihood) against exact log p_data(x | y).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _reference import fd_grad, fd_jac
from scipy.integrate import quad

from fmref.guidance import CFG, ClassifierGuidance, Tilted, cfg_gap, guidance_weight
from fmref.likelihood import log_likelihood
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, eight_gaussians_classes, random_mixture
from fmref.samplers import sample
from fmref.schedules import Cosine, Linear

LABELS = np.array([0, 1, 0, 1, 1])


def _mp(seed: int = 0, d: int = 2, sched: Any = None) -> MarginalPath:
    base = random_mixture(5, d, "full", rng=seed, dirichlet_weights=True)
    data = GaussianMixture(base.weights, base.means, base.covs, labels=LABELS)
    return MarginalPath(data, Linear() if sched is None else sched)


# -- conventions ------------------------------------------------------------------------------
def test_guidance_weight_conventions_reproduce_their_fields() -> None:
    mp = _mp()
    x = np.random.default_rng(0).normal(size=(6, 2))
    t, y, omega = 0.5, 1, 2.5
    u, uy = mp.vector_field(x, t), mp.vector_field(x, t, y=y)
    ho = (1 + omega) * uy - omega * u  # Ho & Salimans, written out
    delta = u + omega * (uy - u)  # diffusers' guidance_scale
    w_ho = guidance_weight(omega, convention="ho")
    w_delta = guidance_weight(omega, convention="delta")
    np.testing.assert_allclose(CFG(mp, y, w_ho).vector_field(x, t), ho, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        CFG(mp, y, w_delta).vector_field(x, t), delta, rtol=1e-12, atol=1e-12
    )
    # Mixing the conventions up is a visible error.
    assert not np.allclose(CFG(mp, y, w_delta).vector_field(x, t), ho, rtol=1e-6, atol=1e-6)
    assert guidance_weight(np.float64(3.0), convention="weight") == 3.0
    with pytest.raises(ValueError, match="convention"):
        guidance_weight(1.0, convention="cfg")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scale"):
        guidance_weight("2", convention="ho")  # type: ignore[arg-type]


def test_bad_guidance_arguments() -> None:
    mp = _mp()
    with pytest.raises(ValueError, match="w must be >= 0"):
        CFG(mp, 0, -1.0)
    with pytest.raises(TypeError, match="w must be a real number"):
        CFG(mp, 0, True)
    with pytest.raises(ValueError, match="labelled"):
        CFG(MarginalPath(random_mixture(2, 2, "isotropic"), Linear()), 0, 2.0)
    with pytest.raises(ValueError, match="not a class"):
        Tilted(mp, 4, 2.0)
    with pytest.raises(ValueError, match="quadrature is for d <= 2"):
        Tilted(_mp(d=3), 0, 2.0).log_normaliser(0.5, method="quadrature")
    with pytest.raises(ValueError, match="width"):
        Tilted(mp, 0, 2.0).log_normaliser(0.5, width=-1.0)
    with pytest.raises(ValueError, match="method"):
        Tilted(mp, 0, 2.0).log_normaliser(0.5, method="mc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        cfg_gap(mp, y=0, w=2.0, n=1)
    with pytest.raises(ValueError, match="α_t > 0"):
        ClassifierGuidance(mp, 0, 2.0).vector_field(np.zeros((2, 2)), 0.0)


# -- the CFG field: divergence and Jacobian by finite differences; two routes agree ---------
@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_cfg_divergence_and_jacobian_by_finite_differences(w: float) -> None:
    mp = _mp(1, d=3)
    g = np.random.default_rng(1)
    x = g.normal(size=(5, 3)) * 1.5
    t, h = 0.55, 1e-3
    for y in (0, 1):
        cfg = CFG(mp, y, w)
        fd = fd_jac(lambda z, cfg=cfg: cfg.vector_field(z, t), x, h)
        np.testing.assert_allclose(cfg.jacobian(x, t), fd, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(
            cfg.divergence(x, t), np.trace(fd, axis1=1, axis2=2), rtol=1e-7, atol=1e-8
        )
    # A label per row gives each row the field of its own class.
    rows = np.array([0, 1, 1, 0, 1])
    per_row = CFG(mp, rows, w).evaluate(x, t, ("vector_field", "divergence"))
    for i, y in enumerate(rows):
        one = CFG(mp, int(y), w).evaluate(x[i : i + 1], t, ("vector_field", "divergence"))
        for q in per_row:
            np.testing.assert_allclose(per_row[q][i], one[q][0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sched", [Linear(), Cosine()])
def test_classifier_guidance_through_the_score_identity_equals_cfg(sched: Any) -> None:
    """Two routes: (α̇/α) x + (α̇β²/α − ββ̇)(s + w ∇log p_t(y|x)) against (1 − w) u + w u_y."""
    mp = _mp(2, sched=sched)
    x = np.random.default_rng(2).normal(size=(8, 2)) * 2
    for t in (0.1, 0.5, 0.95):
        for w in (0.5, 2.0, 5.0):
            cg = ClassifierGuidance(mp, 1, w).vector_field(x, t)
            np.testing.assert_allclose(cg, CFG(mp, 1, w).vector_field(x, t), rtol=1e-9, atol=1e-9)
    # A classifier gradient of the wrong sign gives another field.
    anti = ClassifierGuidance(mp, 1, -2.0).vector_field(x, 0.5)
    assert not np.allclose(anti, CFG(mp, 1, 2.0).vector_field(x, 0.5), rtol=1e-6, atol=1e-6)


def test_cfg_score_is_the_tilted_score_by_finite_differences() -> None:
    mp = _mp(3)
    x = np.random.default_rng(3).normal(size=(6, 2))
    t, w = 0.7, 3.0
    tilted = Tilted(mp, 0, w)
    fd = fd_grad(lambda z: tilted.unnormalised_log_prob(z, t), x, 1e-3)
    np.testing.assert_allclose(CFG(mp, 0, w).score(x, t), fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(tilted.score(x, t), fd, rtol=1e-7, atol=1e-8)


# -- the normaliser of q^w_t --------------------------------------------------------------------
def test_tilted_normaliser_in_1d_matches_scipy_quad() -> None:
    data = GaussianMixture(
        np.array([0.3, 0.2, 0.5]),
        np.array([[-2.0], [0.5], [2.5]]),
        np.array([0.4, 0.3, 0.6]),
        labels=[0, 0, 1],
    )
    mp = MarginalPath(data, Linear())
    for t, w in ((1.0, 3.0), (0.6, 2.0), (0.6, 0.5)):
        tilted = Tilted(mp, 0, w)

        def f(v: float, tilted: Tilted = tilted, t: float = t) -> float:
            return math.exp(float(tilted.unnormalised_log_prob(np.array([[v]]), t)[0]))

        ref = math.log(quad(f, -15, 15, points=[-2, 0.5, 2.5], limit=200, epsabs=1e-13)[0])
        got = tilted.log_normaliser(t)
        assert got.method == "quadrature"
        np.testing.assert_allclose(got.value, ref, rtol=0, atol=1e-9)


def test_tilted_normaliser_importance_sampling_agrees_with_quadrature() -> None:
    mp = MarginalPath(eight_gaussians_classes(4), Linear())
    for t, w in ((1.0, 3.0), (0.5, 2.0)):
        tilted = Tilted(mp, 0, w)
        q = tilted.log_normaliser(t)
        s = tilted.log_normaliser(t, method="importance", n=40_000, rng=11)
        assert s.stderr > 0
        assert abs(s.value - q.value) < 4 * s.stderr + 1e-9, (s, q)
    # Bounds of the docstring: 0 at w = 1, at most (w − 1) log(1/π_y) for w ≥ 1.
    assert abs(Tilted(mp, 0, 1.0).log_normaliser(0.5).value) < 1e-10
    pi_y = float(mp.data.class_weights()[0])
    assert Tilted(mp, 0, 3.0).log_normaliser(0.5).value <= 2 * math.log(1 / pi_y) + 1e-9


# -- the facts ----------------------------------------------------------------------------------
def test_cfg_at_w1_carries_p_init_to_p_data_given_y() -> None:
    """Likelihood through the exact CFG divergence at w = 1 is log p_data(x | y) within 1e-5;
    at w = 2 the same computation misses it by far more (the check can fail)."""
    data = eight_gaussians_classes(2)
    mp = MarginalPath(data, Linear())
    y = 1
    x1 = data.given(y).sample(64, rng=5)
    exact = np.asarray(data.given(y).log_prob(x1))
    lik = log_likelihood(CFG(mp, y, 1.0).vector_field, x1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lik.log_prob, exact, rtol=0, atol=1e-5)
    lik2 = log_likelihood(CFG(mp, y, 2.0).vector_field, x1, rtol=1e-10, atol=1e-10)
    assert np.max(np.abs(lik2.log_prob - exact)) > 0.1


def test_cfg_output_is_not_the_tilted_density_for_w_above_one() -> None:
    """KL(CFG output ‖ q^w_1) is 0 at w = 1 (to solver error) and > 0 at w = 3 by many
    standard errors; q^w_1 itself stays close to p_data(· | y) here (separated classes)."""
    mp = MarginalPath(eight_gaussians_classes(2), Linear())
    one = cfg_gap(mp, y=0, w=1.0, n=200, rng=1)
    assert abs(one.kl) < 1e-6
    np.testing.assert_allclose(one.log_rho, one.log_p_data, rtol=0, atol=1e-5)
    three = cfg_gap(mp, y=0, w=3.0, n=300, rng=1)
    assert three.kl > 0.3 and three.kl > 10 * three.kl_stderr, (three.kl, three.kl_stderr)


def _cfg_samples(w: float, n: int, rng: int) -> tuple[np.ndarray, GaussianMixture]:
    data = eight_gaussians_classes(2)
    cfg = CFG(MarginalPath(data, Linear()), 0, w)
    res = sample(cfg.vector_field, n, rng=rng, dim=2, method="dop853", rtol=1e-7, atol=1e-7)
    return np.asarray(res.x), data.given(0)


def test_cfg_sharpens_mode_weights_and_collapses_modes_tangentially() -> None:
    """At w = 4 the heaviest mode of p_data(· | y = 0) (π = 0.4) takes far more than 40 % of
    the CFG samples, the lightest (π = 0.1) far less; each mode's spread across the radius
    shrinks below a third of its variance and its centre moves away from the other class."""
    n = 800
    x, cond = _cfg_samples(4.0, n, 3)
    comp = np.argmax(np.asarray(cond.responsibilities(x)), axis=1)
    freq = np.bincount(comp, minlength=4) / n
    se = np.sqrt(cond.weights * (1 - cond.weights) / n)
    assert freq[0] > cond.weights[0] + 5 * se[0], freq
    assert freq[3] < cond.weights[3] - 3 * se[3], freq
    mu = cond.means[comp]
    e_r = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    e_t = np.stack([-e_r[:, 1], e_r[:, 0]], axis=1)
    sd = np.sqrt(cond.covs[comp])
    tangential = ((x - mu) * e_t).sum(axis=1) / sd
    radial = ((x - mu) * e_r).sum(axis=1) / sd
    assert tangential.var(ddof=1) < 0.33
    assert radial.mean() > 10 * radial.std(ddof=1) / math.sqrt(n)
    # The same statistics of exact draws of p_data(· | y) show none of it (the tests can fail).
    ref = cond.sample(n, rng=4, return_components=True)
    mu_r = cond.means[ref[1]]
    er = mu_r / np.linalg.norm(mu_r, axis=1, keepdims=True)
    et = np.stack([-er[:, 1], er[:, 0]], axis=1)
    assert ((ref[0] - mu_r) * et).sum(axis=1).var(ddof=1) / cond.covs[0] > 0.8


def test_strong_guidance_leaves_the_support() -> None:
    """At w = 8 with four classes (opposite modes, weights 2:1) several per cent of the CFG
    samples fall below the 0.1 % quantile of log p_data(x | y); at w = 1 about 0.1 % do."""
    data = eight_gaussians_classes(4)
    cond = data.given(0)
    thr = np.quantile(cond.log_prob(cond.sample(50_000, rng=9)), 0.001)
    n = 800
    out = {}
    for w in (1.0, 8.0):
        cfg = CFG(MarginalPath(data, Linear()), 0, w)
        res = sample(cfg.vector_field, n, rng=2, dim=2, method="dop853", rtol=1e-7, atol=1e-7)
        out[w] = float((np.asarray(cond.log_prob(res.x)) < thr).mean())
    # Binomial(800, 0.001) exceeds 6 with probability below 1e-4.
    assert out[1.0] <= 6 / n
    assert out[8.0] > 0.01, out


def test_tilted_family_is_not_transported_by_the_cfg_field() -> None:
    """The log continuity residual r = ∂_t log q̃^w_t + div u^w + u^w·∇log q^w_t equals
    −∂_t log Z^w_t, a constant in x, iff u^w transports q^w_t. At w = 1 it is 0 everywhere;
    at w = 3 it varies across x by orders of magnitude more than its rounding error."""
    mp = _mp(4)
    g = np.random.default_rng(4)
    x = g.normal(size=(40, 2)) * 2
    t = 0.5
    spread = {}
    for w in (1.0, 3.0):
        names = ("dlog_prob_dt", "vector_field", "divergence", "score")
        unc, cond = mp.evaluate(x, t, names), mp.evaluate(x, t, names, y=0)
        mix = {q: (1 - w) * unc[q] + w * cond[q] for q in names}
        r = mix["dlog_prob_dt"] + mix["divergence"] + np.sum(mix["vector_field"] * mix["score"], 1)
        spread[w] = float(r.max() - r.min())
    assert spread[1.0] < 1e-10, spread
    assert spread[3.0] > 1e-2, spread


def test_cfg_gap_refuses_schedules_that_do_not_start_at_p_init() -> None:
    from fmref.schedules import VP

    with pytest.raises(ValueError, match="α_0 = 0"):
        cfg_gap(MarginalPath(eight_gaussians_classes(2), VP()), y=0, w=2.0, n=10)


def test_example_measures_the_facts() -> None:
    """examples/guidance.py runs and its numbers show the facts on a small sample."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "guidance.py"
    spec = importlib.util.spec_from_file_location("guidance_example", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    one, four = mod.measure(2, weights=(1.0, 4.0), n=150, rng=7)
    assert abs(one["kl"]) < 1e-6 and one["max_abs_log_rho_minus_log_p_data"] < 1e-5
    assert four["kl"] > 10 * four["kl_stderr"]
    assert four["tangential_var"] < 0.5 < one["tangential_var"]
