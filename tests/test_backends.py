"""Backend contract of the core: results stay in the input's namespace, device and dtype.

Per-module tests check values; this file checks the plumbing on every backend of the
``backend``/``backend32`` fixtures (numpy, array_api_strict, torch through array-api-compat,
cupy when a GPU is present): the namespace, device and dtype of every result, agreement with
NumPy float64, parameters moved once per (namespace, device, dtype), and no silent casting.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import pytest
from conftest import Backend, make_backend

from fmref import continuity, conversions
from fmref.marginals import QUANTITIES, MarginalPath
from fmref.mixtures import GaussianMixture, random_mixture
from fmref.paths import GaussianPath
from fmref.schedules import Cosine, Linear

#: float32 agreement with the float64 oracle on O(1) inputs (a few hundred ulps of 1.2e-7).
TOL32 = {"rtol": 2e-4, "atol": 2e-4}
TOL64 = {"rtol": 1e-11, "atol": 1e-11}


def _mixture(kind: str, k: int = 4, d: int = 3) -> GaussianMixture:
    return random_mixture(k, d, kind, rng=7, ridge=0.3, dirichlet_weights=True)


def _same_backend(a: Any, be: Backend, what: str) -> None:
    xp = array_api_compat.array_namespace(a)
    want = array_api_compat.array_namespace(be.asarray(np.zeros(1)))
    assert xp is want, f"{what}: namespace {xp.__name__}, expected {want.__name__}"
    assert a.dtype == be.dtype, f"{what}: dtype {a.dtype}, expected {be.dtype}"
    assert str(array_api_compat.device(a)) == str(be.device), f"{what}: device moved"


def _inputs(be: Backend, n: int = 9, d: int = 3) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    g = np.random.default_rng(11)
    x = 1.5 * g.standard_normal((n, d))
    t = g.uniform(0.05, 0.95, n)
    # Round through the backend's dtype so the float64 oracle sees exactly the same inputs.
    x = be.to_numpy(be.asarray(x))
    t = be.to_numpy(be.asarray(t))
    return x, t, be.asarray(x), be.asarray(t)


def _check_core(be: Backend, tol: dict[str, float]) -> None:
    for kind in ("full", "diagonal", "isotropic"):
        gm = _mixture(kind)
        mp = MarginalPath(gm, Cosine())
        x, t, xb, tb = _inputs(be)
        got = mp.evaluate(xb, tb, QUANTITIES)
        ref = mp.evaluate(x, t, QUANTITIES)
        for q in QUANTITIES:
            _same_backend(got[q], be, f"{kind} {q}")
            np.testing.assert_allclose(be.to_numpy(got[q]), ref[q], err_msg=f"{kind} {q}", **tol)
        # Scalar t follows the points' dtype (a Python float carries no precision of its own).
        s = mp.score(xb, 0.5)
        _same_backend(s, be, "score at scalar t")
        np.testing.assert_allclose(be.to_numpy(s), mp.score(x, 0.5), **tol)
        res = continuity.identity_residual(mp, xb, tb)
        _same_backend(res, be, "continuity identity")
        for name in ("log_prob", "score", "responsibilities"):
            v = getattr(gm, name)(xb)
            _same_backend(v, be, f"data.{name}")
            np.testing.assert_allclose(be.to_numpy(v), getattr(gm, name)(x), **tol)

    path = GaussianPath(Linear())
    x, t, xb, tb = _inputs(be)
    z, _, zb, _ = _inputs(be, n=9)
    for name in ("conditional_vector_field", "conditional_score", "conditional_log_prob"):
        v = getattr(path, name)(xb, zb, tb)
        _same_backend(v, be, f"path.{name}")
        np.testing.assert_allclose(be.to_numpy(v), getattr(path, name)(x, z, t), **tol)
    v = conversions.velocity_from_score(Cosine(), xb, tb, zb)
    _same_backend(v, be, "conversions.velocity_from_score")
    np.testing.assert_allclose(
        be.to_numpy(v), conversions.velocity_from_score(Cosine(), x, t, z), **tol
    )


def test_core_stays_on_backend_float64(backend: Backend) -> None:
    _check_core(backend, TOL64)


def test_core_stays_on_backend_float32(backend32: Backend) -> None:
    _check_core(backend32, TOL32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_core_on_torch_float32_and_64(dtype: str) -> None:
    """torch (through array-api-compat) in both precisions; the fixtures cover torch only in f64."""
    be = make_backend("torch", dtype)
    _check_core(be, TOL32 if dtype == "float32" else TOL64)


def test_params_moved_once_per_namespace_device_dtype(backend: Backend) -> None:
    gm = _mixture("full")
    mp = MarginalPath(gm, Linear())
    _, _, xb, tb = _inputs(backend)
    p1 = gm.params(backend.xp, backend.device, backend.dtype)
    for _ in range(3):
        mp.evaluate(xb, tb, ("vector_field", "score", "log_prob"))
        mp.jacobian(xb, 0.3)
    p2 = gm.params(backend.xp, backend.device, backend.dtype)
    assert p1 is p2
    _same_backend(p1.means, backend, "cached means")
    _same_backend(p1.qcat, backend, "cached eigenvectors")
    # A second dtype is a second entry, the first one is reused untouched.
    mp.score(np.zeros((2, 3), dtype=np.float32), 0.5)
    assert gm.params(backend.xp, backend.device, backend.dtype) is p1


def test_params_cache_keys_on_torch() -> None:
    pytest.importorskip("torch")
    import torch

    gm = _mixture("full")
    mp = MarginalPath(gm, Linear())
    x64 = torch.zeros((4, 3), dtype=torch.float64)
    x32 = torch.zeros((4, 3), dtype=torch.float32)
    for _ in range(3):
        mp.vector_field(x64, 0.5)
        mp.vector_field(x32, 0.5)
    keys = [k for k in gm._cache if "torch" in k[0]]
    assert sorted(k[2] for k in keys) == ["torch.float32", "torch.float64"]


def test_no_silent_casting(backend32: Backend) -> None:
    """A float32 batch with a float64 time array (or the reverse) is refused, naming t."""
    be64 = make_backend(backend32.name, "float64")
    mp = MarginalPath(_mixture("full"), Linear())
    x32 = backend32.asarray(np.zeros((5, 3)))
    x64 = be64.asarray(np.zeros((5, 3)))
    t32 = backend32.asarray(np.full(5, 0.5))
    t64 = be64.asarray(np.full(5, 0.5))
    with pytest.raises(TypeError, match="t has dtype"):
        mp.vector_field(x32, t64)
    with pytest.raises(TypeError, match="t has dtype"):
        mp.score(x64, t32)
    path = GaussianPath(Linear())
    with pytest.raises(TypeError, match="dtype"):
        path.conditional_vector_field(x32, x64, 0.5)


def test_no_silent_casting_torch() -> None:
    torch = pytest.importorskip("torch")
    mp = MarginalPath(_mixture("full"), Linear())
    x = torch.zeros((5, 3), dtype=torch.float32)
    with pytest.raises(TypeError, match="t has dtype"):
        mp.vector_field(x, torch.full((5,), 0.5, dtype=torch.float64))
    with pytest.raises(TypeError, match="real floating"):
        mp.vector_field(torch.zeros((5, 3), dtype=torch.int64), 0.5)
    # Mixing namespaces is refused (naming z), never converted behind the user's back.
    with pytest.raises(TypeError, match="z"):
        GaussianPath(Linear()).conditional_vector_field(x, np.zeros((5, 3), np.float32), 0.5)


def test_torch_autograd_inputs_are_not_needed_but_accepted() -> None:
    """A tensor that requires grad is evaluated (fmref never calls .numpy() on user arrays)."""
    torch = pytest.importorskip("torch")
    mp = MarginalPath(_mixture("full"), Cosine())
    x = torch.tensor(np.random.default_rng(3).standard_normal((6, 3)), requires_grad=True)
    u = mp.vector_field(x, 0.4)
    assert isinstance(u, torch.Tensor) and u.dtype == torch.float64
    np.testing.assert_allclose(
        u.detach().numpy(), mp.vector_field(x.detach().numpy(), 0.4), **TOL64
    )
