"""Labelled data and the conditional quantities of MarginalPath (``y=``), the exact classifier.

Independent routes: scipy densities component by component (conditional densities,
responsibilities, Bayes' rule for p_t(y | x)), fourth-order central finite differences in
float64 (scores, Jacobians, the classifier gradient), enumeration for Dirac data (the
conditional field as a posterior average of GaussianPath.conditional_vector_field) and the
continuity equation with ∂_t by finite differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _cases import SCHEDULES
from _reference import ab, fd_dt, fd_grad, fd_jac
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, eight_gaussians_classes, random_mixture
from fmref.paths import GaussianPath
from fmref.schedules import Cosine, Linear

LABELS = np.array([0, 1, 0, 2, 1, 2])


def _labelled(kind: str, seed: int = 0, d: int = 3) -> GaussianMixture:
    base = random_mixture(6, d, kind, rng=seed, dirichlet_weights=True)
    return GaussianMixture(base.weights, base.means, base.covs, labels=LABELS)


def _ref_joint(data: GaussianMixture, x: np.ndarray, a: float, b: float) -> np.ndarray:
    """log π_k N(x; α μ_k, α² Σ_k + β² I) by scipy, shape (n, k)."""
    covs = data.full_covs()
    d = data.dim
    return np.stack(
        [
            np.log(data.weights[j])
            + multivariate_normal(a * data.means[j], a * a * covs[j] + b * b * np.eye(d)).logpdf(x)
            for j in range(data.n_components)
        ],
        axis=-1,
    ).reshape(x.shape[0], -1)


def _ref_cond(data: GaussianMixture, x: np.ndarray, a: float, b: float, y: np.ndarray) -> Any:
    """(log p_t(x | y), γ_{k|y}, log p_t(y | x)) by scipy, y one label per row."""
    joint = _ref_joint(data, x, a, b)
    member = data.labels[None, :] == y[:, None]
    masked = np.where(member, joint, -np.inf)
    log_py = np.log((member * data.weights[None, :]).sum(axis=1))
    lc = logsumexp(masked, axis=1)
    return lc - log_py, np.exp(masked - lc[:, None]), lc - logsumexp(joint, axis=1)


# -- labelled mixtures ------------------------------------------------------------------------
def test_given_renormalises_weights_and_keeps_components() -> None:
    data = eight_gaussians_classes(2)
    assert data.classes.tolist() == [0, 1]
    np.testing.assert_allclose(data.class_weights(), [0.5, 0.5], rtol=0, atol=1e-15)
    g = data.given(1)
    # Odd modes 1, 3, 5, 7 have relative weights 4, 3, 2, 1 (the documented pattern).
    np.testing.assert_allclose(g.weights, [0.4, 0.3, 0.2, 0.1], rtol=1e-14, atol=0)
    np.testing.assert_allclose(g.means, data.means[1::2], rtol=0, atol=0)
    assert g.labels.tolist() == [1, 1, 1, 1]
    four = eight_gaussians_classes(4)
    assert four.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    np.testing.assert_allclose(four.given(3).weights, [0.75, 0.25], rtol=1e-14, atol=0)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_given_log_prob_is_the_class_conditional_density(kind: str) -> None:
    data = _labelled(kind)
    x = np.random.default_rng(1).normal(size=(7, 3)) * 2
    for y in (0, 1, 2):
        ref, _, _ = _ref_cond(data, x, 1.0, 0.0, np.full(7, y))
        np.testing.assert_allclose(data.given(y).log_prob(x), ref, rtol=1e-12, atol=1e-12)


def test_unlabelled_mixture_keeps_its_repr_and_refuses_class_questions() -> None:
    data = random_mixture(3, 2, "isotropic")
    assert data.labels is None
    assert "labels" not in repr(data) and "classes" not in repr(data)
    with pytest.raises(ValueError, match="labels"):
        data.given(0)
    with pytest.raises(ValueError, match="labels"):
        MarginalPath(data, Linear()).log_prob(np.zeros((1, 2)), 0.5, y=0)


@pytest.mark.parametrize(
    ("labels", "exc", "match"),
    [
        (np.array([0.0, 1.0, 0.0]), TypeError, "integer"),
        (np.array([True, False, True]), TypeError, "integer"),
        (np.array([0, 1]), ValueError, r"shape \(3,\)"),
    ],
)
def test_bad_labels(labels: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        GaussianMixture(np.full(3, 1 / 3), np.zeros((3, 2)), np.ones(3), labels=labels)


def test_bad_y() -> None:
    data = _labelled("isotropic")
    mp = MarginalPath(data, Linear())
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="not a class"):
        data.given(5)
    with pytest.raises(TypeError, match="int label"):
        data.given(1.0)
    with pytest.raises(ValueError, match="not classes"):
        mp.log_prob(x, 0.5, y=np.array([0, 1, 7, 0]))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        mp.log_prob(x, 0.5, y=np.array([0, 1]))
    with pytest.raises(TypeError, match="integer labels"):
        mp.log_prob(x, 0.5, y=np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="need y="):
        mp.evaluate(x, 0.5, ("classifier_log_prob",))
    assert mp.log_prob(x, 0.5, y=np.int64(2)).shape == (4,)


# -- conditional quantities against scipy, finite differences, enumeration ---------------------
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("sched", ["linear", "cosine", "vp"])
def test_conditional_density_responsibilities_and_classifier_match_scipy(
    kind: str, sched: str
) -> None:
    data = _labelled(kind)
    mp = MarginalPath(data, SCHEDULES[sched])
    g = np.random.default_rng(2)
    x = g.normal(size=(9, 3)) * 2
    y = g.integers(0, 3, size=9)
    for t in (0.0, 0.4, 0.9):
        a, b, _, _ = ab(SCHEDULES[sched], t)
        lc, gam, lcls = _ref_cond(data, x, a, b, y)
        r = mp.evaluate(x, t, ("log_prob", "responsibilities", "classifier_log_prob"), y=y)
        np.testing.assert_allclose(r["log_prob"], lc, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(r["responsibilities"], gam, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(r["classifier_log_prob"], lcls, rtol=1e-10, atol=1e-11)


def test_classifier_probabilities_sum_to_one_identity() -> None:
    """Identity (the algebra guarantees it): Σ_y p_t(y | x) = 1."""
    mp = MarginalPath(_labelled("full"), Cosine())
    x = np.random.default_rng(3).normal(size=(6, 3))
    total = sum(np.exp(mp.classifier_log_prob(x, 0.7, y=c)) for c in (0, 1, 2))
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_conditional_score_jacobian_divergence_and_classifier_gradient_by_fd(kind: str) -> None:
    data = _labelled(kind)
    mp = MarginalPath(data, Linear())
    g = np.random.default_rng(4)
    x = g.normal(size=(5, 3)) * 1.5
    t, h = 0.6, 1e-3
    for y in (0, 2):
        r = mp.evaluate(
            x, t, ("score", "jacobian", "divergence", "classifier_score", "vector_field"), y=y
        )
        fd_s = fd_grad(lambda z, y=y: mp.log_prob(z, t, y=y), x, h)
        np.testing.assert_allclose(r["score"], fd_s, rtol=1e-7, atol=1e-8)
        fd_j = fd_jac(lambda z, y=y: mp.vector_field(z, t, y=y), x, h)
        np.testing.assert_allclose(r["jacobian"], fd_j, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(
            r["divergence"], np.trace(fd_j, axis1=1, axis2=2), rtol=1e-7, atol=1e-8
        )
        fd_c = fd_grad(lambda z, y=y: mp.classifier_log_prob(z, t, y=y), x, h)
        np.testing.assert_allclose(r["classifier_score"], fd_c, rtol=1e-7, atol=1e-8)
        # A plausible wrong classifier gradient (5 % too strong) fails the same check.
        assert not np.allclose(1.05 * r["classifier_score"], fd_c, rtol=1e-7, atol=1e-8)


def test_conditional_field_satisfies_the_continuity_equation() -> None:
    """∂_t log p_t(x|y) (finite differences in t) + div u(x|y) + u(x|y)·s(x|y) = 0."""
    mp = MarginalPath(_labelled("full"), Cosine())
    x = np.random.default_rng(5).normal(size=(6, 3))
    y = np.array([0, 1, 2, 0, 1, 2])
    t = 0.45
    r = mp.evaluate(x, t, ("divergence", "vector_field", "score", "dlog_prob_dt"), y=y)
    dt = fd_dt(lambda s: mp.log_prob(x, s, y=y), t, 1e-4)
    np.testing.assert_allclose(r["dlog_prob_dt"], dt, rtol=1e-7, atol=1e-8)
    resid = dt + r["divergence"] + np.sum(r["vector_field"] * r["score"], axis=1)
    np.testing.assert_allclose(resid, 0.0, rtol=0, atol=1e-7)
    wrong = dt + r["divergence"] + np.sum(1.05 * r["vector_field"] * r["score"], axis=1)
    assert np.max(np.abs(wrong)) > 1e-3


def test_dirac_conditional_field_by_enumeration() -> None:
    """u_t(x | y) = Σ_{i∈y} P(z_i | x, y) u_t(x | z_i), the posterior written out with scipy."""
    g = np.random.default_rng(6)
    z = g.normal(size=(7, 2)) * 2
    w = g.dirichlet(np.ones(7))
    lab = np.array([0, 0, 1, 1, 1, 2, 2])
    data = GaussianMixture(w, z, np.zeros(7), labels=lab)
    sched = Cosine()
    mp, path = MarginalPath(data, sched), GaussianPath(sched)
    x = g.normal(size=(4, 2))
    t = 0.7
    a, b, _, _ = ab(sched, t)
    for y in (0, 1, 2):
        idx = np.flatnonzero(lab == y)
        logw = np.log(w[idx])[None, :] + np.stack(
            [multivariate_normal(a * z[i], b * b * np.eye(2)).logpdf(x) for i in idx], axis=1
        )
        post = np.exp(logw - logsumexp(logw, axis=1, keepdims=True))
        u_i = np.stack(
            [path.conditional_vector_field(x, np.tile(z[i], (4, 1)), t) for i in idx], axis=1
        )
        ref = np.einsum("ni,nid->nd", post, u_i)
        np.testing.assert_allclose(mp.vector_field(x, t, y=y), ref, rtol=1e-11, atol=1e-12)


def test_conditional_log_prob_far_from_the_class_does_not_underflow() -> None:
    """Where every γ_k of class y underflows (x deep in another class), log p_t(x|y) is finite
    and exact: renormalising the unconditional responsibilities would give 0/0 there."""
    data = GaussianMixture(
        np.array([0.5, 0.5]), np.array([[-30.0], [30.0]]), np.array([0.01, 0.01]), labels=[0, 1]
    )
    mp = MarginalPath(data, Linear())
    x = np.array([[30.0], [29.0]])
    ref = multivariate_normal(-30.0, 0.01).logpdf(x[:, 0])
    np.testing.assert_allclose(mp.log_prob(x, 1.0, y=0), ref, rtol=1e-12, atol=0)
    s = mp.score(x, 1.0, y=0)
    np.testing.assert_allclose(s[:, 0], -(x[:, 0] + 30.0) / 0.01, rtol=1e-12, atol=0)
    assert np.all(np.isfinite(mp.classifier_score(x, 1.0, y=0)))


def test_per_row_labels_match_scalar_labels_across_chunks() -> None:
    data = _labelled("full")
    g = np.random.default_rng(7)
    x = g.normal(size=(600, 3))
    y = g.integers(0, 3, size=600)
    t = g.uniform(0, 1, size=600)
    small = MarginalPath(data, Linear(), memory_budget=64 * 1024)  # forces many chunks
    names = ("vector_field", "divergence", "classifier_score", "posterior_mean")
    got = small.evaluate(x, t, names, y=y)
    whole = MarginalPath(data, Linear())
    for c in (0, 1, 2):
        rows = y == c
        ref = whole.evaluate(x[rows], t[rows], names, y=c)
        sub = MarginalPath(data.given(c), Linear()).evaluate(x[rows], t[rows], names[:2])
        for q in names:
            np.testing.assert_allclose(got[q][rows], ref[q], rtol=1e-12, atol=1e-12)
        # The single-class path of the sub-mixture gives the same field (other parameters).
        for q in names[:2]:
            np.testing.assert_allclose(got[q][rows], sub[q], rtol=1e-10, atol=1e-11)


def test_conditional_quantities_in_every_namespace(backend: Any) -> None:
    data = _labelled("full")
    mp = MarginalPath(data, Linear())
    g = np.random.default_rng(8)
    x = g.normal(size=(5, 3))
    y = np.array([0, 1, 2, 2, 1])
    names = ("log_prob", "vector_field", "classifier_log_prob", "classifier_score")
    ref = mp.evaluate(x, 0.3, names, y=y)
    got = mp.evaluate(backend.asarray(x), 0.3, names, y=y)
    for q in names:
        np.testing.assert_allclose(backend.to_numpy(got[q]), ref[q], rtol=1e-12, atol=1e-12)


def test_sample_given_y_draws_the_class_conditional_path() -> None:
    """Exact draws of p_t(· | y): the mean is α_t E[z | y] within 4 standard errors, per row
    labels give each row its class, and a class's draws do not match another class's mean."""
    data = eight_gaussians_classes(4)
    mp = MarginalPath(data, Cosine())
    t, n = 0.8, 20_000
    a = ab(Cosine(), t)[0]
    for y in (0, 3):
        x = mp.sample(n, t, rng=1, y=y)
        mean = a * data.given(y).mean()
        se = x.std(axis=0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(x.mean(axis=0) - mean) < 4 * se)
        other = a * data.given((y + 1) % 4).mean()
        assert np.any(np.abs(x.mean(axis=0) - other) > 10 * se)
    labels = np.arange(n) % 4
    x = mp.sample(n, 1.0, rng=2, y=labels)
    # At t = 1 the classes' modes are far apart: the exact classifier recovers each label.
    assert np.mean(mp.classifier_log_prob(x, 1.0, y=labels) > np.log(0.5)) > 0.99


def test_conditional_quantities_refuse_dask_inputs() -> None:
    da = pytest.importorskip("dask.array")
    mp = MarginalPath(_labelled("isotropic"), Linear())
    x = da.zeros((4, 3), chunks=2)
    with pytest.raises(ValueError, match="Dask"):
        mp.log_prob(x, 0.5, y=0)
