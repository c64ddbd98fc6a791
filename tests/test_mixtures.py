"""GaussianMixture (p_data): density, score, sampling and moments against independent routes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _cases import make_case
from _reference import fd_grad, ref_log_prob, ref_responsibilities
from scipy.stats import multivariate_normal

from fmref.mixtures import GaussianMixture, eight_gaussians, random_2d, random_mixture

KINDS = ("isotropic", "diagonal", "full")
SHAPES = [(1, 1), (1, 4), (3, 2), (5, 6)]  # (k, d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_log_prob_and_responsibilities_match_scipy(backend: Any, kind: str, k: int, d: int) -> None:
    case = make_case(10 * k + d, k, d, kind)
    x = case.gm.sample(7, rng=1) + np.random.default_rng(2).normal(size=(7, d))
    bx = backend.asarray(x)
    np.testing.assert_allclose(
        backend.to_numpy(case.gm.log_prob(bx)),
        ref_log_prob(case, x, 1.0, 0.0),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        backend.to_numpy(case.gm.responsibilities(bx)),
        ref_responsibilities(case, x, 1.0, 0.0),
        rtol=1e-10,
        atol=1e-13,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("k", "d"), SHAPES)
def test_score_is_gradient_of_log_prob(backend: Any, kind: str, k: int, d: int) -> None:
    case = make_case(7 * k + d, k, d, kind)
    x = case.gm.sample(5, rng=3)
    got = backend.to_numpy(case.gm.score(backend.asarray(x)))
    # Eigenvalues ≥ 0.2, so features have scale ≥ 0.45; h = 1e-3 with the O(h⁴) stencil.
    want = fd_grad(lambda xs: ref_log_prob(case, xs, 1.0, 0.0), x, 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7 * (1 + np.abs(want).max()))


def test_single_gaussian_textbook(backend: Any) -> None:
    mu = np.array([1.0, -2.0, 0.5])
    a = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, -0.2], [0.0, -0.2, 0.5]])
    gm = GaussianMixture.gaussian(mu, a)
    assert gm.n_components == 1 and gm.kind == "full"
    x = np.random.default_rng(0).normal(size=(6, 3))
    bx = backend.asarray(x)
    np.testing.assert_allclose(
        backend.to_numpy(gm.log_prob(bx)),
        multivariate_normal(mu, a).logpdf(x),
        rtol=1e-13,
        atol=1e-13,
    )
    np.testing.assert_allclose(
        backend.to_numpy(gm.score(bx)), -np.linalg.solve(a, (x - mu).T).T, rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(gm.mean(), mu, rtol=0, atol=1e-15)
    np.testing.assert_allclose(gm.covariance(), a, rtol=1e-14, atol=1e-15)
    iso = GaussianMixture.gaussian(mu, 0.7)
    np.testing.assert_allclose(
        backend.to_numpy(iso.log_prob(bx)),
        multivariate_normal(mu, 0.7 * np.eye(3)).logpdf(x),
        rtol=1e-13,
        atol=1e-13,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_moments_formula_and_samples(kind: str) -> None:
    case = make_case(11, 4, 3, kind)
    w, mu, cov = case.weights, case.means, case.covs
    # Independent form: E[z zᵀ] = Σ π_k (Σ_k + μ_k μ_kᵀ), Cov = E[z zᵀ] − E[z]E[z]ᵀ.
    m = sum(w[j] * mu[j] for j in range(case.k))
    second = sum(w[j] * (cov[j] + np.outer(mu[j], mu[j])) for j in range(case.k))
    np.testing.assert_allclose(case.gm.mean(), m, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        case.gm.covariance(), second - np.outer(m, m), rtol=1e-12, atol=1e-13
    )
    np.testing.assert_allclose(case.gm.full_covs(), cov, rtol=1e-12, atol=1e-13)
    lam = np.linalg.eigvalsh(cov) if kind == "full" else np.diagonal(cov, axis1=1, axis2=2)
    np.testing.assert_allclose(case.gm.eigenvalues, lam, rtol=1e-12, atol=1e-13)

    n = 40_000
    z, comp = case.gm.sample(n, rng=np.random.default_rng(5), return_components=True)
    assert z.shape == (n, 3) and z.dtype == np.float64
    # Sample mean within 5 standard errors.
    se_mean = np.sqrt(np.diag(second - np.outer(m, m)) / n)
    assert np.all(np.abs(z.mean(0) - m) <= 5 * se_mean)
    # Sample covariance entries within 5 standard errors of the products' spread.
    c = z - m
    prod = c[:, :, None] * c[:, None, :]
    se_cov = prod.std(0) / math.sqrt(n)
    assert np.all(np.abs(prod.mean(0) - (second - np.outer(m, m))) <= 5 * se_cov + 1e-12)
    # Component labels: frequencies within 5 binomial standard errors, per-component means.
    freq = np.bincount(comp, minlength=case.k) / n
    assert np.all(np.abs(freq - w) <= 5 * np.sqrt(w * (1 - w) / n))
    for j in range(case.k):
        zj = z[comp == j]
        se = np.sqrt(np.diag(cov[j]) / len(zj))
        assert np.all(np.abs(zj.mean(0) - mu[j]) <= 5 * se)


def test_sample_reproducible_and_like(backend: Any) -> None:
    gm = make_case(3, 3, 2, "full").gm
    a = gm.sample(50, rng=123)
    b = gm.sample(50, rng=np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    like = backend.asarray(np.zeros((1, 2)))
    zb = gm.sample(50, rng=123, like=like)
    assert zb.dtype == like.dtype
    np.testing.assert_allclose(backend.to_numpy(zb), a, rtol=0, atol=0)
    assert gm.sample(0, rng=1).shape == (0, 2)


def test_empirical_points(backend: Any) -> None:
    pts = np.array([[0.0, 1.0], [2.0, -1.0], [3.0, 3.0], [-1.0, 0.5]])
    gm = GaussianMixture.empirical(backend.asarray(pts))
    assert gm.kind == "dirac" and gm.n_components == 4 and gm.dim == 2
    np.testing.assert_allclose(gm.weights, np.full(4, 0.25), rtol=0, atol=1e-16)
    np.testing.assert_allclose(gm.mean(), pts.mean(0), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(gm.covariance(), np.cov(pts.T, bias=True), rtol=1e-14, atol=1e-14)
    z = gm.sample(400, rng=0)
    # Every draw is one of the points exactly, and each point appears.
    dist = np.abs(z[:, None, :] - pts[None]).max(axis=2)
    assert np.all(dist.min(axis=1) == 0)
    assert set(dist.argmin(axis=1)) == {0, 1, 2, 3}
    weighted = GaussianMixture.empirical(pts, weights=[0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(weighted.mean(), [0.1, 0.2, 0.3, 0.4] @ pts, rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError, match="singular"):
        gm.log_prob(backend.asarray(pts))


def test_weights_renormalised_within_tolerance() -> None:
    w = np.array([0.3, 0.7 + 5e-7])
    gm = GaussianMixture(w, [[0.0], [1.0]], [1.0, 2.0])
    np.testing.assert_allclose(gm.weights.sum(), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(gm.weights, w / w.sum(), rtol=1e-15, atol=0)


def test_named_datasets() -> None:
    e8 = eight_gaussians()
    assert e8.n_components == 8 and e8.dim == 2 and e8.kind == "isotropic"
    np.testing.assert_allclose(np.linalg.norm(e8.means, axis=1), 5.0, rtol=1e-14, atol=0)
    np.testing.assert_allclose(e8.weights, 1 / 8, rtol=1e-15, atol=0)
    np.testing.assert_allclose(
        e8.full_covs(), math.sqrt(0.1) * np.eye(2)[None].repeat(8, 0), rtol=1e-15, atol=0
    )
    # Symmetric layout: mean zero; covariance (r²/2 + variance) I.
    np.testing.assert_allclose(e8.mean(), 0.0, rtol=0, atol=1e-14)
    np.testing.assert_allclose(
        e8.covariance(), (12.5 + math.sqrt(0.1)) * np.eye(2), rtol=1e-13, atol=1e-13
    )
    r = random_2d(nmodes=5, std=1.0, scale=10.0, seed=3)
    assert r.n_components == 5 and r.dim == 2
    assert np.all(np.abs(r.means) <= 5.0)
    np.testing.assert_allclose(r.full_covs(), np.eye(2)[None].repeat(5, 0), rtol=0, atol=0)
    np.testing.assert_array_equal(random_2d(seed=3).means, r.means)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_close_to_float64(backend32: Any, kind: str) -> None:
    case = make_case(4, 3, 4, kind)
    x = case.gm.sample(9, rng=0)
    lp = case.gm.log_prob(backend32.asarray(x))
    sc = case.gm.score(backend32.asarray(x))
    assert lp.dtype == backend32.dtype and sc.dtype == backend32.dtype
    want_lp = ref_log_prob(case, x, 1.0, 0.0)
    np.testing.assert_allclose(backend32.to_numpy(lp), want_lp, rtol=1e-5, atol=1e-4)
    want_sc = case.gm.score(x)
    np.testing.assert_allclose(
        backend32.to_numpy(sc), want_sc, rtol=1e-4, atol=1e-4 * np.abs(want_sc).max()
    )


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic", "dirac"])
def test_random_mixture_kinds_are_reproducible_and_well_conditioned(kind: str) -> None:

    a = random_mixture(5, 3, kind, rng=11, var_range=(0.2, 1.5))
    b = random_mixture(5, 3, kind, rng=np.random.default_rng(11), var_range=(0.2, 1.5))
    np.testing.assert_array_equal(a.full_covs(), b.full_covs())
    np.testing.assert_array_equal(a.means, b.means)
    assert a.kind == kind
    lam = a.eigenvalues
    if kind == "dirac":
        np.testing.assert_array_equal(lam, np.zeros((5, 3)))
    elif kind == "full":
        assert lam.min() >= 0.2 - 1e-12  # A Aᵀ/d is PSD, plus the ridge
    else:
        assert lam.min() >= 0.2 and lam.max() <= 1.5
    np.testing.assert_allclose(a.weights, np.full(5, 0.2), rtol=0, atol=1e-15)


def test_random_mixture_bad_arguments() -> None:

    with pytest.raises(ValueError, match="covariance"):
        random_mixture(2, 2, "dense")
    with pytest.raises(ValueError, match=r"\bk\b"):
        random_mixture(0, 2)
    with pytest.raises(ValueError, match="var_range"):
        random_mixture(2, 2, var_range=(0.0, 1.0))


def test_repr_rebuilds_a_small_mixture_and_elides_a_large_one() -> None:
    from fmref.testing import oracle_mixture

    for m in (oracle_mixture(2), oracle_mixture(3, labelled=True), eight_gaussians()):
        back = eval(repr(m), {"GaussianMixture": GaussianMixture})
        assert back.kind == m.kind and repr(back) == repr(m)
        for a, b in ((back.weights, m.weights), (back.means, m.means), (back.covs, m.covs)):
            np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)
        if m.labels is not None:
            np.testing.assert_array_equal(back.labels, m.labels)
    big = random_mixture(10, 5)
    assert repr(big) == "GaussianMixture(k=10, d=5, kind='full')"
