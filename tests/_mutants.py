"""An independent PyTorch implementation of flow matching for Gaussian mixtures, and bugs in it.

Written from the mathematics with no fmref code (only the mixture's numbers are read from
fmref objects by the tests): the schedules and their derivatives, the conditional path
x_t = α_t z + β_t ε and target α̇_t z + β̇_t ε, the marginal log p_t, score, vector field and
divergence of a Gaussian mixture (log-sum-exp with the max subtracted), the fixed-step ODE
samplers and the likelihood log p_1(x1) = log p_0(X_0) − ∫_0^1 div u_t(X_t) dt.

``Impl(weights, means, covs, bug=NAME)`` switches on one realistic bug of :data:`MUTANTS`
(name → what a user would have written). The tests in ``tests/test_mutations.py`` check that
the documented default calls of ``fmref.testing`` refuse every mutant and accept the correct
implementation in float32 and float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor

#: bug name → the mistake, as a user would make it.
MUTANTS: dict[str, str] = {
    # schedules and the conditional path
    "swap_alpha_beta": "α_t = 1 − t, β_t = t (t = 0 is data: the other convention)",
    "target_sign": "CFM target ε − z instead of z − ε",
    "target_no_eps": "target α̇_t z, the β̇_t ε term dropped",
    "cosine_no_half_pi": "cosine schedule: α̇_t = cos(πt/2), the factor π/2 forgotten",
    "cosine_beta_one_minus_alpha": "cosine schedule: β_t = 1 − sin(πt/2)",
    # the marginal path of a mixture
    "lse_no_max": "log-sum-exp and softmax without subtracting the max",
    "weights_ignored": "responsibilities and log p with equal weights 1/K instead of w_k",
    "diag_cov_only": "only the diagonal of each Σ_k is used",
    "s_no_square": "S_k = α_t Σ_k + β_t I instead of α_t² Σ_k + β_t² I",
    "score_sign": "score +S⁻¹(x − α μ) instead of −S⁻¹(x − α μ)",
    "field_no_half": "u_k = α̇ μ_k + Ṡ_k S_k⁻¹(x − α μ_k), the ½ of ½ Ṡ forgotten",
    "div_no_cross": "divergence Σ r_k tr(A_k S_k⁻¹) without the ∇r_k · u_k term",
    "logp_no_2pi": "log N without −d/2 log 2π",
    "logdet_no_half": "log N with −log det S instead of −½ log det S",
    "mean_not_scaled": "x − μ_k instead of x − α_t μ_k",
    "cov_not_inverted": "S_k (x − α μ_k) instead of S_k⁻¹ (x − α μ_k)",
    "softmax_wrong_axis": "responsibilities normalised over the batch, not the components",
    "float32_inside": "computes in float32 (and returns float32) when given float64",
    "late_branch": "for 0.98 < t < 1 the field and score are evaluated at t = 1",
    "early_branch": "for 0 < t < 0.02 the field and score are evaluated at t = 0",
    "field_t_clamp": "t clamped to ≤ 1 − 1e-3 in the field and score (to avoid 1/(1 − t))",
    # samplers
    "euler_n_minus_1": "Euler loop for i = 1, …, n − 1 with h = 1/n (n − 1 steps)",
    "euler_linspace_n": "Euler on linspace(0, 1, n): n − 1 steps of h = 1/(n − 1)",
    "midpoint_at_t": "midpoint rule: second stage evaluated at t instead of t + h/2",
    "heun_second_at_t": "Heun: second stage evaluated at t instead of t + h",
    "rk4_equal_weights": "RK4 combining (k1 + k2 + k3 + k4)/4",
    "rk4_k3_from_k1": "RK4 k3 = u(x + h/2 k1, t + h/2) instead of k2",
    "sampler_float32": "the sampler moves x to float32",
    "sampler_t_clamp": "the sampler's grid is linspace(0, 1 − 1e-3, n + 1)",
    # likelihood
    "lik_div_sign": "log p_0(X_0) + ∫ div u instead of − ∫ div u",
    "lik_no_2pi": "log p_0 = −|x|²/2 without −d/2 log 2π",
    "lik_t_clamp": "the backward solve starts at t = 1 − 1e-3 instead of 1",
}

SAMPLER_METHODS = ("euler", "heun", "midpoint", "rk4")


class Impl:
    """A user's flow-matching code for the mixture Σ_k w_k N(μ_k, Σ_k), with one bug or none.

    Every function takes x (n, d) and t (n,) torch tensors and computes in x's dtype.
    """

    def __init__(
        self,
        weights: Any,
        means: Any,
        covs: Any,
        *,
        bug: str | None = None,
        likelihood_steps: int = 64,
    ) -> None:
        if bug is not None and bug not in MUTANTS:
            raise ValueError(f"unknown bug {bug!r}")
        self.w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
        self.mu = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        self.cov = torch.as_tensor(np.asarray(covs), dtype=torch.float64)
        self.bug = bug
        self.likelihood_steps = likelihood_steps

    # -- schedules --------------------------------------------------------------------------
    def schedule(self, t: Tensor, kind: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(α, β, α̇, β̇) of the linear or cosine schedule at t."""
        if kind == "linear":
            one = torch.ones_like(t)
            if self.bug == "swap_alpha_beta":
                return 1 - t, t, -one, one
            return t, 1 - t, one, -one
        h = math.pi / 2
        a, b = torch.sin(h * t), torch.cos(h * t)
        da, db = h * b, -h * a
        if self.bug == "cosine_no_half_pi":
            da = b
        if self.bug == "cosine_beta_one_minus_alpha":
            b, db = 1 - a, -da
        return a, b, da, db

    def path(self, kind: str = "linear") -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
        """(sample_fn(z, eps, t), target_fn(z, eps, t)) of the conditional path."""

        def sample_fn(z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
            a, b, _, _ = self.schedule(t, kind)
            return a[:, None] * z + b[:, None] * eps

        def target_fn(z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
            _, _, da, db = self.schedule(t, kind)
            if self.bug == "target_sign":
                return -(da[:, None] * z + db[:, None] * eps)
            if self.bug == "target_no_eps":
                return da[:, None] * z
            return da[:, None] * z + db[:, None] * eps

        return sample_fn, target_fn

    # -- the marginal path ------------------------------------------------------------------
    def _parts(self, x: Tensor, t: Tensor) -> dict[str, Tensor]:
        """Per-component pieces at (x, t), in the compute dtype."""
        dt = torch.float32 if self.bug == "float32_inside" else x.dtype
        x, t = x.to(dt), t.to(dt)
        if self.bug == "late_branch":
            t = torch.where((t > 0.98) & (t < 1), torch.ones_like(t), t)
        if self.bug == "early_branch":
            t = torch.where((t > 0) & (t < 0.02), torch.zeros_like(t), t)
        if self.bug == "field_t_clamp":
            t = torch.clamp(t, max=1 - 1e-3)
        w, mu, cov = self.w.to(dt), self.mu.to(dt), self.cov.to(dt)
        if self.bug == "weights_ignored":
            w = torch.full_like(w, 1.0 / w.shape[0])
        if self.bug == "diag_cov_only":
            cov = torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
        d = x.shape[1]
        a, b, da, db = self.schedule(t, "linear")
        eye = torch.eye(d, dtype=dt)
        a2, b2 = (a, b) if self.bug == "s_no_square" else (a * a, b * b)
        s = a2[:, None, None, None] * cov[None] + b2[:, None, None, None] * eye  # (n, K, d, d)
        chol = torch.linalg.cholesky(s)
        centre = mu[None] if self.bug == "mean_not_scaled" else a[:, None, None] * mu[None]
        diff = x[:, None, :] - centre  # (n, K, d)
        if self.bug == "cov_not_inverted":
            sol = (s @ diff[..., None])[..., 0]
        else:
            sol = torch.cholesky_solve(diff[..., None], chol)[..., 0]  # S⁻¹ (x − α μ)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        quad = (diff * sol).sum(-1)
        half = 1.0 if self.bug == "logdet_no_half" else 0.5
        norm = 0.0 if self.bug == "logp_no_2pi" else 0.5 * d * math.log(2 * math.pi)
        log_n = -0.5 * quad - half * logdet - norm  # (n, K)
        logits = torch.log(w)[None] + log_n
        if self.bug == "lse_no_max":
            e = torch.exp(logits)
            log_p = torch.log(e.sum(1))
            r = e / e.sum(1, keepdim=True)
        elif self.bug == "softmax_wrong_axis":
            log_p = torch.logsumexp(logits, 1)
            r = torch.softmax(logits, 0)
        else:
            m = logits.max(1, keepdim=True).values
            e = torch.exp(logits - m)
            log_p = m[:, 0] + torch.log(e.sum(1))
            r = e / e.sum(1, keepdim=True)
        # u_k = α̇ μ_k + A_k S_k⁻¹ (x − α μ_k), A_k = ½ Ṡ_k = α α̇ Σ_k + β β̇ I
        k_a = a * da * (2.0 if self.bug == "field_no_half" else 1.0)
        k_b = b * db * (2.0 if self.bug == "field_no_half" else 1.0)
        amat = k_a[:, None, None, None] * cov[None] + k_b[:, None, None, None] * eye
        u_k = da[:, None, None] * mu[None] + (amat @ sol[..., None])[..., 0]
        sign = 1.0 if self.bug == "score_sign" else -1.0
        s_k = sign * sol  # per-component scores
        return {"log_p": log_p, "r": r, "u_k": u_k, "s_k": s_k, "amat": amat, "chol": chol}

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """log p_t(x) = log Σ_k w_k N(x; α μ_k, S_k)."""
        return self._parts(x, t)["log_p"]

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """∇ log p_t(x) = Σ_k r_k(x) (−S_k⁻¹ (x − α μ_k))."""
        p = self._parts(x, t)
        return (p["r"][..., None] * p["s_k"]).sum(1)

    def vector_field(self, x: Tensor, t: Tensor) -> Tensor:
        """u_t(x) = Σ_k r_k(x) u_k(x)."""
        p = self._parts(x, t)
        return (p["r"][..., None] * p["u_k"]).sum(1)

    def divergence(self, x: Tensor, t: Tensor) -> Tensor:
        """div u = Σ_k r_k tr(A_k S_k⁻¹) + Σ_k r_k (s_k − s) · u_k."""
        p = self._parts(x, t)
        r, u_k, s_k = p["r"], p["u_k"], p["s_k"]
        s_inv_a = torch.cholesky_solve(p["amat"], p["chol"])  # S⁻¹ A; tr(A S⁻¹) = tr(S⁻¹ A)
        tr = torch.diagonal(s_inv_a, dim1=-2, dim2=-1).sum(-1)
        div = (r * tr).sum(1)
        if self.bug != "div_no_cross":
            score = (r[..., None] * s_k).sum(1)
            div = div + (r * ((s_k - score[:, None, :]) * u_k).sum(-1)).sum(1)
        return div

    # -- samplers ---------------------------------------------------------------------------
    def sampler(self, method: str) -> Callable[[Any, Tensor, int], Tensor]:
        """sampler(field, x0, steps) → x1 integrating dx/dt = field(x, t) over [0, 1]."""
        bug = self.bug

        def run(field: Any, x0: Tensor, steps: int) -> Tensor:
            x = x0.to(torch.float32) if bug == "sampler_float32" else x0
            n = x.shape[0]
            if bug == "euler_linspace_n" and method == "euler":
                grid = torch.linspace(0, 1, steps, dtype=torch.float64)
            elif bug == "sampler_t_clamp":
                grid = torch.linspace(0, 1 - 1e-3, steps + 1, dtype=torch.float64)
            else:
                grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
            if bug == "euler_n_minus_1" and method == "euler":
                h = 1.0 / steps
                grid = torch.arange(steps, dtype=torch.float64) * h  # 0, h, …, (n − 1)h

            def f(y: Tensor, tau: float) -> Tensor:
                return field(y, torch.full((n,), tau, dtype=y.dtype))

            for i in range(grid.shape[0] - 1):
                t, t1 = float(grid[i]), float(grid[i + 1])
                h = t1 - t
                if method == "euler":
                    x = x + h * f(x, t)
                elif method == "heun":
                    k1 = f(x, t)
                    k2 = f(x + h * k1, t if bug == "heun_second_at_t" else t1)
                    x = x + 0.5 * h * (k1 + k2)
                elif method == "midpoint":
                    k1 = f(x, t)
                    x = x + h * f(x + 0.5 * h * k1, t if bug == "midpoint_at_t" else t + 0.5 * h)
                else:
                    k1 = f(x, t)
                    k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
                    k3 = f(x + 0.5 * h * (k1 if bug == "rk4_k3_from_k1" else k2), t + 0.5 * h)
                    k4 = f(x + h * k3, t1)
                    if bug == "rk4_equal_weights":
                        x = x + h * (k1 + k2 + k3 + k4) / 4
                    else:
                        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            return x

        return run

    # -- likelihood -------------------------------------------------------------------------
    def likelihood(self, x1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log p_1(x1), X_0, ∫_0^1 div u_t(X_t) dt) by RK4 backwards from t = 1 to 0."""
        n, d = x1.shape
        start = 1 - 1e-3 if self.bug == "lik_t_clamp" else 1.0
        steps = self.likelihood_steps
        h = -start / steps

        def rate(y: Tensor, tau: float) -> Tensor:
            x, tt = y[:, :d], torch.full((n,), tau, dtype=y.dtype)
            return torch.cat([self.vector_field(x, tt), self.divergence(x, tt)[:, None]], 1)

        y = torch.cat([x1, torch.zeros(n, 1, dtype=x1.dtype)], 1)
        for i in range(steps):
            t = start + i * h
            k1 = rate(y, t)
            k2 = rate(y + 0.5 * h * k1, t + 0.5 * h)
            k3 = rate(y + 0.5 * h * k2, t + 0.5 * h)
            k4 = rate(y + h * k3, t + h)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        x0 = y[:, :d]
        delta = -y[:, d]  # the solve ran from 1 down to 0: it holds −∫_0^1 div u dt
        norm = 0.0 if self.bug == "lik_no_2pi" else 0.5 * d * math.log(2 * math.pi)
        log_p0 = -0.5 * (x0 * x0).sum(1) - norm
        log_p = log_p0 + delta if self.bug == "lik_div_sign" else log_p0 - delta
        return log_p, x0, delta
