"""fmref inside torch autograd: every MarginalPath quantity is differentiable by tracing, and
the traced derivatives equal fmref's closed forms.

Autograd differentiates the kernel's log p_t, u_t (…) formulas step by step, sharing no code
with the closed-form score, Jacobian and ∂_t log p_t, so each equality below is an independent
check of one closed form (and of the tracing); central finite differences in float64 back up
the t-derivative. A scaled or sign-flipped closed form fails each comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")

from _cases import make_case  # noqa: E402

import fmref  # noqa: E402
from fmref import _xp  # noqa: E402
from fmref.marginals import QUANTITIES  # noqa: E402

TOL = {torch.float64: (1e-9, 1e-10), torch.float32: (2e-4, 2e-5)}
KINDS = ("isotropic", "diagonal", "full", "dirac")


def _path(kind: str) -> fmref.MarginalPath:
    if kind == "dirac":
        pts = np.random.default_rng(3).normal(size=(4, 3))
        return fmref.MarginalPath(fmref.GaussianMixture.empirical(pts), fmref.schedules.Cosine())
    return fmref.MarginalPath(make_case(7, 3, 3, kind).gm, fmref.schedules.Cosine())


def _points(mp: fmref.MarginalPath, t: float, dtype: Any, n: int = 6) -> Any:
    x = mp.sample(n, t, rng=11, like=torch.zeros(1, dtype=dtype))
    return x.detach().clone().requires_grad_(True)


def _close(a: Any, b: Any, dtype: Any) -> None:
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_row", [False, True])
def test_grad_of_log_prob_is_score(kind: str, dtype: Any, per_row: bool) -> None:
    mp = _path(kind)
    x = _points(mp, 0.6, dtype)
    t = torch.linspace(0.3, 0.8, 6, dtype=dtype) if per_row else 0.6
    (g,) = torch.autograd.grad(mp.log_prob(x, t).sum(), x)
    s = mp.score(x.detach(), t)
    _close(g, s, dtype)
    with pytest.raises(AssertionError):  # a scaled score is caught
        _close(g, 1.01 * s, dtype)


def _autograd_jacobian(f: Any, x: Any) -> Any:
    """(n, d, d) with entry [i, j] = ∂f_i/∂x_j, one backward pass per output coordinate."""
    out = f(x)
    rows = [
        torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0] for i in range(x.shape[1])
    ]
    return torch.stack(rows, dim=1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_autograd_jacobian_of_vector_field_is_jacobian(kind: str, dtype: Any) -> None:
    mp = _path(kind)
    x = _points(mp, 0.5, dtype)
    jac = _autograd_jacobian(lambda z: mp.vector_field(z, 0.5), x)
    closed = mp.jacobian(x.detach(), 0.5)
    _close(jac, closed, dtype)
    with pytest.raises(AssertionError):  # a scaled Jacobian is caught
        _close(jac, 1.01 * closed, dtype)
    # the trace of the traced Jacobian is the closed-form divergence
    _close(torch.diagonal(jac, dim1=1, dim2=2).sum(-1), mp.divergence(x.detach(), 0.5), dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_time_derivative_of_log_prob(kind: str, dtype: Any) -> None:
    mp = _path(kind)
    x = _points(mp, 0.4, dtype).detach()
    t = torch.linspace(0.2, 0.7, 6, dtype=dtype).requires_grad_(True)
    (g,) = torch.autograd.grad(mp.log_prob(x, t).sum(), t)
    closed = mp.dlog_prob_dt(x, t.detach())
    _close(g, closed, dtype)
    with pytest.raises(AssertionError):  # a flipped sign is caught
        _close(g, -closed, dtype)
    # one shared t given as a 0-d tensor: the gradient is the sum over rows
    t0 = torch.tensor(0.45, dtype=dtype, requires_grad=True)
    (g0,) = torch.autograd.grad(mp.log_prob(x, t0).sum(), t0)
    _close(g0, mp.dlog_prob_dt(x, 0.45).sum(), dtype)


def test_time_derivative_constant_t_array_is_per_row() -> None:
    """A constant (n,) t that requires grad keeps one gradient per row (not all on row 0)."""
    mp = _path("full")
    x = _points(mp, 0.5, torch.float64).detach()
    t = torch.full((6,), 0.5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(mp.log_prob(x, t).sum(), t)
    _close(g, mp.dlog_prob_dt(x, 0.5), torch.float64)
    # independent check: central finite differences of log p in float64
    h = 1e-6
    fd = (mp.log_prob(x, 0.5 + h) - mp.log_prob(x, 0.5 - h)) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", QUANTITIES)
def test_every_quantity_is_differentiable(name: str) -> None:
    """Every quantity traces, across chunks (a tiny budget), and gradcheck passes in x and t."""
    mp = fmref.MarginalPath(make_case(2, 2, 2, "full").gm, fmref.schedules.Linear())
    small = fmref.MarginalPath(mp.data, mp.path, memory_budget=800)  # 1-2 rows per chunk
    x = _points(mp, 0.5, torch.float64, n=5)
    t = torch.linspace(0.3, 0.7, 5, dtype=torch.float64).requires_grad_(True)

    def f(xx: Any, tt: Any, m: fmref.MarginalPath = mp) -> Any:
        return getattr(m, name)(xx, tt)

    assert torch.autograd.gradcheck(f, (x, t), eps=1e-6, atol=1e-6, rtol=1e-5)
    chunked = f(x, t, small)
    torch.testing.assert_close(chunked, f(x, t), rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(chunked.sum(), x)
    (gb,) = torch.autograd.grad(f(x, t).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_in_place_where_the_namespace_allows() -> None:
    """NumPy and torch without grad are updated in place; torch under autograd and JAX not."""
    a, b = np.ones(3), np.full(3, 2.0)
    assert _xp.imul(a, b) is a
    ta = torch.ones(3)
    assert _xp.imul(ta, torch.full((3,), 2.0)) is ta
    tg = torch.ones(3, requires_grad=True)
    out = _xp.imul(tg * 1, torch.full((3,), 2.0))
    assert out.requires_grad and torch.equal(tg, torch.ones(3))
