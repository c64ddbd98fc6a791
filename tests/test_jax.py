"""JAX as a backend: any n, eager and under jax.jit, jax.grad and jax.vmap.

JAX's derivatives trace the kernel's formulas and share no code with the closed-form score,
Jacobian and ∂_t log p_t, so each gradient equality is an independent check of one closed form;
jit and vmap must reproduce the eager values. A scaled or sign-flipped closed form fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax not installed (optional extra: pip install jax)")
jnp = jax.numpy

from _cases import make_case  # noqa: E402

import fmref  # noqa: E402
import fmref.jax  # noqa: E402
from fmref.marginals import QUANTITIES  # noqa: E402
from fmref.optim import Adam  # noqa: E402

# jit compiles each quantity: about 2 minutes for the file on a busy 2-core machine
pytestmark = pytest.mark.slow

TOL = {"float64": (1e-9, 1e-10), "float32": (2e-4, 2e-5)}


@pytest.fixture(params=["float64", "float32"])
def dtype(request: Any) -> Iterator[str]:
    """The dtype under test, with jax_enable_x64 switched on for float64 and restored after."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == "float64")
    try:
        yield request.param
    finally:
        jax.config.update("jax_enable_x64", old)


def _path(kind: str, **kw: Any) -> fmref.MarginalPath:
    if kind == "dirac":
        pts = np.random.default_rng(3).normal(size=(4, 3))
        gm = fmref.GaussianMixture.empirical(pts)
    else:
        gm = make_case(5, 3, 3, kind).gm
    return fmref.MarginalPath(gm, fmref.schedules.Cosine(), **kw)


def _x(mp: fmref.MarginalPath, t: float, dtype: str, n: int = 6) -> Any:
    return jnp.asarray(mp.sample(n, t, rng=4), dtype=getattr(jnp, dtype))


def _close(a: Any, b: Any, dtype: str) -> None:
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# float64 on every covariance kind, float32 on the two with their own code paths (full: the
# rotations; dirac: λ = 0): each combination costs seconds of JAX tracing.
@pytest.mark.parametrize(
    ("kind", "dtype"),
    [(k, "float64") for k in ("isotropic", "diagonal", "full", "dirac")]
    + [("full", "float32"), ("dirac", "float32")],
    indirect=["dtype"],
)
def test_gradients_equal_closed_forms(kind: str, dtype: str) -> None:
    mp = _path(kind)
    x = _x(mp, 0.6, dtype)
    t = jnp.linspace(0.3, 0.8, 6, dtype=getattr(jnp, dtype))
    g = jax.grad(lambda z: mp.log_prob(z, t).sum())(x)
    s = mp.score(x, t)
    _close(g, s, dtype)
    with pytest.raises(AssertionError):
        _close(g, 1.01 * s, dtype)
    jac = jax.vmap(jax.jacfwd(lambda z: mp.vector_field(z[None, :], 0.6)[0]))(x)
    closed = mp.jacobian(x, 0.6)
    _close(jac, closed, dtype)
    with pytest.raises(AssertionError):
        _close(jac, 1.01 * closed, dtype)
    gt = jax.grad(lambda tt: mp.log_prob(x, tt).sum())(t)
    _close(gt, mp.dlog_prob_dt(x, t), dtype)
    with pytest.raises(AssertionError):
        _close(gt, -mp.dlog_prob_dt(x, t), dtype)


@pytest.mark.parametrize("name", QUANTITIES)
def test_jit_and_vmap_equal_eager_and_numpy(name: str, dtype: str) -> None:
    mp = _path("full")
    x = _x(mp, 0.5, dtype)
    eager = getattr(mp, name)(x, 0.5)
    ref = getattr(mp, name)(np.asarray(x), 0.5)  # NumPy, the default backend
    _close(eager, ref, dtype)
    jitted = jax.jit(lambda z: getattr(mp, name)(z, 0.5))(x)
    _close(jitted, eager, dtype)
    mapped = jax.vmap(lambda z: getattr(mp, name)(z[None, :], 0.5)[0])(x)
    _close(mapped, eager, dtype)


@pytest.mark.parametrize("dtype", ["float64"], indirect=True)  # chunking is dtype-blind
def test_any_n_across_chunks(dtype: str) -> None:
    """A call larger than one chunk (4 rows, 2 for the Jacobian) concatenates, eager and jitted."""
    mp = _path("full")
    small = _path("full", memory_budget=4000)
    x = _x(mp, 0.7, dtype, n=7)
    for name in ("log_prob", "score", "jacobian"):
        ref = getattr(mp, name)(np.asarray(x), 0.7)
        _close(getattr(small, name)(x, 0.7), ref, dtype)
        _close(jax.jit(lambda z, q=name: getattr(small, q)(z, 0.7))(x), ref, dtype)


def test_eager_input_checks_still_run(dtype: str) -> None:
    mp = _path("full")
    x = _x(mp, 0.5, dtype)
    with pytest.raises(ValueError, match="finite"):
        mp.score(x.at[0, 0].set(jnp.nan), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mp.score(x, jnp.full((6,), 1.5, dtype=x.dtype))
    with pytest.raises(ValueError, match="singular"):
        _path("dirac").score(_x(_path("dirac"), 0.5, dtype), 1.0)


def test_mlp_and_adam_refuse_jax() -> None:
    with pytest.raises(TypeError, match="immutable"):
        fmref.MLP(2, hidden=(8,), rng=0, like=jnp.zeros(1))
    with pytest.raises(TypeError, match="immutable"):
        Adam([jnp.zeros(3)], lr=0.1)


def test_ode_terms(dtype: str) -> None:
    mp = _path("full")
    x = _x(mp, 0.4, dtype)
    f = fmref.jax.vector_field_term(mp)
    _close(f(jnp.asarray(0.4, dtype=x.dtype), x, None), mp.vector_field(x, 0.4), dtype)
    _close(f(0.4, x[0], None), mp.vector_field(x[:1], 0.4)[0], dtype)
    dx, dl = fmref.jax.log_prob_term(mp)(0.4, (x, jnp.zeros(6, dtype=x.dtype)), None)
    _close(dx, mp.vector_field(x, 0.4), dtype)
    _close(dl, -mp.divergence(x, 0.4), dtype)
    with pytest.raises(TypeError, match="MarginalPath"):
        fmref.jax.vector_field_term(mp.data)  # type: ignore[arg-type]


def test_likelihood_by_rk4_under_jit() -> None:
    """Integrating (x, ℓ) from t = 1 to 0 in float64 gives log p_data (scipy reference)."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        from scipy import stats

        case = make_case(9, 2, 2, "full")
        mp = fmref.MarginalPath(case.gm, fmref.schedules.Linear())
        x1 = jnp.asarray(case.gm.sample(4, rng=1))
        f = fmref.jax.log_prob_term(mp)

        @jax.jit
        def integrate(x: Any) -> Any:
            state, h = (x, jnp.zeros(x.shape[0])), -1.0 / 200

            def step(i: Any, s: Any) -> Any:
                t = 1.0 + i * h
                add = lambda a, k, c: jax.tree.map(lambda u, v: u + c * v, a, k)  # noqa: E731
                k1 = f(t, s)
                k2 = f(t + h / 2, add(s, k1, h / 2))
                k3 = f(t + h / 2, add(s, k2, h / 2))
                k4 = f(t + h, add(s, k3, h))
                return jax.tree.map(
                    lambda a, b, c, d, e: a + h / 6 * (b + 2 * c + 2 * d + e), s, k1, k2, k3, k4
                )

            return jax.lax.fori_loop(0, 200, step, state)

        x0, ell = integrate(x1)
        log_p0 = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(np.asarray(x0))
        ref = sum(
            w * stats.multivariate_normal(m, c).pdf(np.asarray(x1))
            for w, m, c in zip(case.weights, case.means, case.covs, strict=True)
        )
        np.testing.assert_allclose(log_p0 - np.asarray(ell), np.log(ref), rtol=1e-6, atol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", old)
