"""An independent PyTorch implementation of the exact marginal path, and a verify impl.

It shares no code with fmref (it imports nothing from it): dense covariances
S_k = α_t² Σ_k + β_t² I, Cholesky factors, and autograd for every derivative
(score = ∇_x log p_t, ∂_t log p_t, div u_t). The schedules are given as (α_t, β_t²) so that
d(β²)/dt stays finite where β̇ is not. torch is imported on first use, so the module imports
without it.

Use it as ``fmref verify SUITE --impl fmref.testing.torch_reference:impl``, grade it with
``fmref report --impl fmref.testing.torch_reference:eight_gaussians_linear --array torch``,
or build an :class:`ExactPath` and pass ``path.vector_field`` to
:func:`fmref.testing.assert_vector_field_close` as a torch vector field.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def _torch() -> Any:
    import torch

    return torch


#: name → (α(t, params), β(t, params), β²(t, params)) in torch; β² separately so that its
#: derivative stays finite at t = 1 where β̇ is infinite (linear_vp, sqrt_beta, vp).
SCHEDULES: dict[str, Any] = {
    "linear": (lambda t, p: t, lambda t, p: 1 - t, lambda t, p: (1 - t) ** 2),
    "cosine": (
        lambda t, p: _torch().sin(math.pi / 2 * t),
        lambda t, p: _torch().cos(math.pi / 2 * t),
        lambda t, p: _torch().cos(math.pi / 2 * t) ** 2,
    ),
    "polynomial": (
        lambda t, p: t ** p["p"],
        lambda t, p: 1 - t ** p["p"],
        lambda t, p: (1 - t ** p["p"]) ** 2,
    ),
    "linear_vp": (lambda t, p: t, lambda t, p: _torch().sqrt(1 - t**2), lambda t, p: 1 - t**2),
    "sqrt_beta": (lambda t, p: t, lambda t, p: _torch().sqrt(1 - t), lambda t, p: 1 - t),
    "vp": (
        lambda t, p: _torch().exp(-0.5 * _vp_big_t(t, p)),
        lambda t, p: _torch().sqrt(-_torch().expm1(-_vp_big_t(t, p))),
        lambda t, p: -_torch().expm1(-_vp_big_t(t, p)),
    ),
}


def _vp_big_t(t: torch.Tensor, p: dict[str, float]) -> torch.Tensor:
    return 0.5 * (1 - t) ** 2 * (p["B"] - p["b"]) + (1 - t) * p["b"]


class ExactPath:
    """p_t = Σ_k π_k N(α μ_k, α² Σ_k + β² I) in torch float64, from mixture parameters."""

    def __init__(
        self, schedule: str, params: dict[str, float], weights: Any, means: Any, covs: Any
    ) -> None:
        torch = _torch()
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
        torch = _torch()
        t = t.detach().requires_grad_(True)
        fs = (self.alpha, self.beta, self.beta2)
        with torch.enable_grad():
            return tuple(torch.autograd.grad(f(t, self.params).sum(), t)[0] for f in fs)

    def _joint(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        torch = _torch()
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
        return _torch().logsumexp(self._joint(x, t)[0], dim=1)

    def vector_field(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """u = Σ_k γ_k (α̇ μ_k + ½ Ṡ_k S_k⁻¹ r_k), Ṡ_k = 2αα̇ Σ_k + d(β²)/dt I."""
        joint, a, ad, _b2, b2d, w = self._joint(x, t)
        gamma = _torch().softmax(joint, dim=1)
        sdot_w = (
            2 * (a * ad)[:, None, None] * (self.cov @ w[..., None])[..., 0] + b2d[:, None, None] * w
        )
        uk = ad[:, None, None] * self.mu + 0.5 * sdot_w
        return (gamma[..., None] * uk).sum(1)

    def x_hat(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[z|x] = Σ_k γ_k (μ_k + α Σ_k S_k⁻¹ r_k)."""
        joint, a, _, _, _, w = self._joint(x, t)
        gamma = _torch().softmax(joint, dim=1)
        ek = self.mu + a[:, None, None] * (self.cov @ w[..., None])[..., 0]
        return (gamma[..., None] * ek).sum(1)


def _grad(f: Any, x: torch.Tensor, t: torch.Tensor, wrt: str) -> torch.Tensor:
    torch = _torch()
    x = x.detach().requires_grad_(wrt == "x")
    t = t.detach().requires_grad_(wrt == "t")
    with torch.enable_grad():
        return torch.autograd.grad(f(x, t).sum(), x if wrt == "x" else t)[0]


def divergence(path: ExactPath, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """tr ∇u by autograd, one backward pass per coordinate."""
    torch = _torch()
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        u = path.vector_field(x, t)
        rows = [
            torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i]
            for i in range(x.shape[1])
        ]
    return torch.stack(rows).sum(0)


def impl(quantity: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """The ``fmref verify`` protocol: every quantity of a golden-vector suite."""
    path = ExactPath(
        case["schedule"], case["schedule_params"], case["weights"], case["means"], case["covs"]
    )
    torch = _torch()
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


@functools.lru_cache(maxsize=1)
def _eight_gaussians_linear_path() -> ExactPath:
    # torchcfm's sample_8gaussians, written out here (not taken from fmref.mixtures): eight
    # equal modes at 5 (cos 2πk/8, sin 2πk/8), covariance √0.1·I.
    ang = 2 * math.pi * np.arange(8) / 8
    means = 5.0 * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return ExactPath("linear", {}, np.full(8, 1 / 8), means, np.full(8, math.sqrt(0.1)))


def eight_gaussians_linear(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Return the exact u_t(x) of eight Gaussians under the Linear schedule (torch float64).

    The default data set and schedule of ``fmref report``; x (n, 2), t (n,) → (n, 2). Its
    exact divergence is the attribute ``eight_gaussians_linear.divergence`` (autograd).
    """
    return _eight_gaussians_linear_path().vector_field(x, t).detach()


def _eight_gaussians_linear_divergence(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return divergence(_eight_gaussians_linear_path(), x, t).detach()


eight_gaussians_linear.divergence = _eight_gaussians_linear_divergence  # type: ignore[attr-defined]
