"""An independent PyTorch implementation of the exact marginal path, and a verify impl.

It shares no code with fmref: dense covariances S_k = α_t² Σ_k + β_t² I, Cholesky factors,
and autograd for every derivative (score = ∇_x log p_t, ∂_t log p_t, div u_t). The schedules
are given as (α_t, β_t²) so that d(β²)/dt stays finite where β̇ is not.

Use it as ``fmref verify SUITE --impl examples/torch_exact_field.py:impl`` or import
:func:`field` as a torch vector field for :func:`fmref.testing.assert_vector_field_close`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

#: name → (α(t, params), β(t, params), β²(t, params)) in torch; β² separately so that its
#: derivative stays finite at t = 1 where β̇ is infinite (linear_vp, sqrt_beta, vp).
SCHEDULES: dict[str, Any] = {
    "linear": (lambda t, p: t, lambda t, p: 1 - t, lambda t, p: (1 - t) ** 2),
    "cosine": (
        lambda t, p: torch.sin(math.pi / 2 * t),
        lambda t, p: torch.cos(math.pi / 2 * t),
        lambda t, p: torch.cos(math.pi / 2 * t) ** 2,
    ),
    "polynomial": (
        lambda t, p: t ** p["p"],
        lambda t, p: 1 - t ** p["p"],
        lambda t, p: (1 - t ** p["p"]) ** 2,
    ),
    "linear_vp": (lambda t, p: t, lambda t, p: torch.sqrt(1 - t**2), lambda t, p: 1 - t**2),
    "sqrt_beta": (lambda t, p: t, lambda t, p: torch.sqrt(1 - t), lambda t, p: 1 - t),
    "vp": (
        lambda t, p: torch.exp(-0.5 * _vp_big_t(t, p)),
        lambda t, p: torch.sqrt(-torch.expm1(-_vp_big_t(t, p))),
        lambda t, p: -torch.expm1(-_vp_big_t(t, p)),
    ),
}


def _vp_big_t(t: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
    return 0.5 * (1 - t) ** 2 * (p["B"] - p["b"]) + (1 - t) * p["b"]


class ExactPath:
    """p_t = Σ_k π_k N(α μ_k, α² Σ_k + β² I) in torch float64, from mixture parameters."""

    def __init__(
        self, schedule: str, params: dict[str, float], weights: Any, means: Any, covs: Any
    ) -> None:
        self.alpha, self.beta, self.beta2 = SCHEDULES[schedule]
        self.params = params
        self.logw = torch.log(torch.as_tensor(weights, dtype=torch.float64))
        self.mu = torch.as_tensor(means, dtype=torch.float64)
        c = torch.as_tensor(covs, dtype=torch.float64)
        _k, d = self.mu.shape
        if c.ndim == 1:
            c = c[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif c.ndim == 2:
            c = torch.diag_embed(c)
        self.cov = c  # (k, d, d)

    def derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """α̇, β̇, d(β²)/dt per row, by autograd in t (constants: no graph back to t)."""
        t = t.detach().requires_grad_(True)
        fs = (self.alpha, self.beta, self.beta2)
        return tuple(torch.autograd.grad(f(t, self.params).sum(), t)[0] for f in fs)

    def _joint(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, b2 = self.alpha(t, self.params), self.beta2(t, self.params)
        ad, _, b2d = self.derivatives(t)
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        s = a[:, None, None, None] ** 2 * self.cov + b2[:, None, None, None] * eye  # (n,k,d,d)
        r = x[:, None, :] - a[:, None, None] * self.mu  # (n, k, d)
        chol = torch.linalg.cholesky(s)
        w = torch.cholesky_solve(r[..., None], chol)[..., 0]  # S⁻¹ r
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = x.shape[1]
        joint = self.logw - 0.5 * ((r * w).sum(-1) + logdet + d * math.log(2 * math.pi))
        return joint, a, ad, b2, b2d, w

    def log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self._joint(x, t)[0], dim=1)

    def vector_field(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u = Σ_k γ_k (α̇ μ_k + ½ Ṡ_k S_k⁻¹ r_k), Ṡ_k = 2αα̇ Σ_k + d(β²)/dt I."""
        joint, a, ad, _b2, b2d, w = self._joint(x, t)
        gamma = torch.softmax(joint, dim=1)
        sdot_w = (
            2 * (a * ad)[:, None, None] * (self.cov @ w[..., None])[..., 0] + b2d[:, None, None] * w
        )
        uk = ad[:, None, None] * self.mu + 0.5 * sdot_w
        return (gamma[..., None] * uk).sum(1)

    def x_hat(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[z|x] = Σ_k γ_k (μ_k + α Σ_k S_k⁻¹ r_k)."""
        joint, a, _, _, _, w = self._joint(x, t)
        gamma = torch.softmax(joint, dim=1)
        ek = self.mu + a[:, None, None] * (self.cov @ w[..., None])[..., 0]
        return (gamma[..., None] * ek).sum(1)


def _grad(f: Any, x: torch.Tensor, t: torch.Tensor, wrt: str) -> torch.Tensor:
    x = x.detach().requires_grad_(wrt == "x")
    t = t.detach().requires_grad_(wrt == "t")
    return torch.autograd.grad(f(x, t).sum(), x if wrt == "x" else t)[0]


def divergence(path: ExactPath, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """tr ∇u by autograd, one backward pass per coordinate."""
    x = x.detach().requires_grad_(True)
    u = path.vector_field(x, t)
    rows = [
        torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1])
    ]
    return torch.stack(rows).sum(0)


def impl(quantity: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """The ``fmref verify`` protocol: every quantity of a golden-vector suite."""
    path = ExactPath(
        case["schedule"], case["schedule_params"], case["weights"], case["means"], case["covs"]
    )
    x, t = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["t"])
    if quantity == "log_prob":
        return path.log_prob(x, t).detach()
    if quantity == "score":
        return _grad(path.log_prob, x, t, "x")
    if quantity == "dlog_prob_dt":
        return _grad(path.log_prob, x, t, "t")
    if quantity == "vector_field":
        return path.vector_field(x, t).detach()
    if quantity == "divergence":
        return divergence(path, x, t).detach()
    if quantity == "posterior_mean":
        return path.x_hat(x, t).detach()
    if quantity == "target":
        ad, bd, _ = path.derivatives(t)
        z, eps = torch.from_numpy(inputs["z"]), torch.from_numpy(inputs["eps"])
        return ad[:, None] * z + bd[:, None] * eps
    return None
