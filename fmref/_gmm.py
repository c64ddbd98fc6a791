"""Eigenbasis kernel for Gaussian mixtures pushed through the path: N(α μ_k, α² Σ_k + β² I).

Each Σ_k = Q_k diag(λ_k) Q_kᵀ is factored once. For every t the covariance S_k = α² Σ_k + β² I
has the same eigenvectors with eigenvalues v = α² λ + β², so with y = Q_kᵀ (x − α μ_k) and
w = y / v (that is, Q_kᵀ S_k⁻¹ r_k) every quantity of docs/theory.md §3–8 is elementwise in w. The
two rotations are GEMMs against the concatenated eigenvectors (d × kd); isotropic and diagonal
mixtures skip them (Q_k = I).

Per-time coefficients (v, and c = αα̇λ + ββ̇, the eigenvalues of ½Ṡ_k) have a leading axis of
1 when every row shares one t, so they cost k·d instead of n·k·d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ._xp import LOG_2PI, Array, Namespace, device, logsumexp


@dataclass(frozen=True)
class Params:
    """Mixture parameters moved to one namespace, device and dtype."""

    log_weights: Array  # (k,)
    means: Array  # (k, d)
    mu_rot: Array  # (k, d): Q_kᵀ μ_k
    lam: Array  # (k, d): eigenvalues of Σ_k
    q: Array | None  # (k, d, d) eigenvectors (columns), None when Σ_k is diagonal
    qcat: Array | None  # (d, k d): [Q_1 … Q_K]
    qcat_t: Array | None  # (k d, d): its transpose


@dataclass
class Terms:
    """Per-chunk state: w = Q_kᵀ S_k⁻¹ r_k, eigenvalues v of S_k, log p and responsibilities."""

    xp: Namespace
    p: Params
    a: Array  # α, (m, 1, 1) with m = 1 (shared t) or n
    b: Array  # β, (m, 1, 1)
    w: Array  # (n, k, d)
    v: Array  # (m, k, d)
    log_prob: Array  # (n,)
    gamma: Array  # (n, k)

    @property
    def g3(self) -> Array:
        return self.gamma[:, :, None]

    @cached_property
    def gw(self) -> Array:
        """γ_k w_k, shared by the score, the velocity and the posterior means."""
        return self.g3 * self.w

    def rotate_back(self, w: Array) -> Array:
        """Σ_k Q_k w_k for w of shape (n, k, d); one GEMM for full covariances."""
        if self.p.qcat_t is None:
            return self.xp.sum(w, axis=1)
        n, k, d = w.shape
        return self.xp.reshape(w, (n, k * d)) @ self.p.qcat_t

    def rotate_each(self, w: Array) -> Array:
        """Q_k w_k per component, shape (n, k, d)."""
        if self.p.q is None:
            return w
        return self.xp.squeeze(self.p.q[None, ...] @ w[..., None], axis=-1)

    def weighted_means(self) -> Array:
        return self.gamma @ self.p.means

    def half_sdot(self, ad: Array, bbd: Array) -> Array:
        """c = αα̇λ + ββ̇: eigenvalues of ½Ṡ_k, so A_k r_k ↦ c·w and tr A_k = Σ c/v."""
        return (self.a * ad) * self.p.lam[None, ...] + bbd


def rotation(p: Params, alpha: Array, beta: Array, xp: Namespace) -> Array | None:
    """The (d + 1, k d) matrix that maps rows to residuals in one GEMM; None without rotations.

    With one shared t it is [Q; −α μ̃] with columns scaled by v^{-1/2}, so [x, 1] @ it is the
    whitened residual; with per-row t it is [Q; −μ̃], and [x, α] @ it is the residual. Built once
    per call (it costs as much as a few rows), not once per chunk.
    """
    if p.qcat is None:
        return None
    k, d = p.lam.shape
    mu_row = -xp.reshape(p.mu_rot, (1, k * d))
    if alpha.shape[0] != 1:
        return xp.concat([p.qcat, mu_row], axis=0)
    v = (alpha[0] * alpha[0]) * p.lam + beta[0] * beta[0]
    scale = xp.reshape(1 / xp.sqrt(v), (1, k * d))
    return xp.concat([p.qcat * scale, (alpha[0] * mu_row) * scale], axis=0)


def compute(
    p: Params, x: Array, alpha: Array, beta: Array, xp: Namespace, rhs: Array | None = None
) -> Terms:
    """Rotate residuals, form v = α²λ + β², log p and responsibilities by log-sum-exp.

    ``alpha`` and ``beta`` have shape (n,) or (1,) (one t shared by every row); ``rhs`` is
    :func:`rotation` for the whole call (computed here when not given).
    """
    n, d = x.shape
    k = p.lam.shape[0]
    a = xp.reshape(alpha, (-1, 1, 1))
    b = xp.reshape(beta, (-1, 1, 1))
    v = (a * a) * p.lam[None, ...] + b * b
    inv_sqrt_v = 1 / xp.sqrt(v)
    shared = alpha.shape[0] == 1
    if p.qcat is not None:
        if rhs is None:
            rhs = rotation(p, alpha, beta, xp)
        last = xp.ones((n, 1), dtype=x.dtype, device=device(x)) if shared else alpha[:, None]
        y = xp.reshape(xp.concat([x, last], axis=1) @ rhs, (n, k, d))
        if not shared:
            y *= inv_sqrt_v
    else:
        y = x[:, None, :] - a * p.means[None, ...]
        y *= inv_sqrt_v
    # y is now the whitened residual S_k^{-1/2} r_k in the eigenbasis: its squared norm is the
    # quadratic form, and one more in-place scaling gives w without a new (n, k, d) array.
    quad = xp.vecdot(y, y, axis=-1)
    y *= inv_sqrt_v
    w = y
    log_det = xp.sum(xp.log(v), axis=2)
    joint = p.log_weights[None, :] - 0.5 * (quad + log_det + d * LOG_2PI)
    log_prob = logsumexp(joint, axis=1, xp=xp)
    gamma = xp.exp(joint - log_prob[:, None])
    return Terms(xp, p, a, b, w, v, log_prob, gamma)


def score(tm: Terms) -> Array:
    """∇log p_t = Σ_k γ_k s_k with s_k = −S_k⁻¹ r_k."""
    return -tm.rotate_back(tm.gw)


def vector_field(tm: Terms, ad: Array, bbd: Array) -> Array:
    """u_t = Σ_k γ_k (α̇ μ_k + A_k r_k); ad, bbd are α̇ and ββ̇ shaped (m, 1, 1)."""
    mean_part = ad[:, :, 0] * tm.weighted_means()
    return mean_part + tm.rotate_back(tm.gw * tm.half_sdot(ad, bbd))


def divergence(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """div u = Σ_k γ_k [tr A_k + s_k·u_k] − s·u, with s_k·u_k = −w·(α̇ μ̃_k + c w)."""
    xp = tm.xp
    c = tm.half_sdot(ad, bbd)
    uk = ad * tm.p.mu_rot[None, ...] + c * tm.w
    per_k = xp.sum(c / tm.v, axis=2) - xp.vecdot(tm.w, uk, axis=-1)
    return xp.sum(tm.gamma * per_k, axis=1) - xp.vecdot(s, u, axis=-1)


def jacobian(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """∇u = Σ_k γ_k [A_k + u_k s_kᵀ] − u sᵀ, shape (n, d, d)."""
    xp = tm.xp
    d = tm.w.shape[2]
    c = tm.half_sdot(ad, bbd)
    gw = tm.g3 * (c / tm.v)  # (n, k, d): γ_k times the eigenvalues of A_k
    if tm.p.q is None:
        eye = xp.eye(d, dtype=u.dtype, device=device(u))
        a_sum = xp.sum(gw, axis=1)[:, :, None] * eye[None, ...]
    else:
        q = tm.p.q[None, ...]  # (1, k, d, d)
        a_sum = xp.sum((q * gw[:, :, None, :]) @ xp.matrix_transpose(q), axis=1)
    uk = ad * tm.p.means[None, ...] + tm.rotate_each(c * tm.w)
    sk = tm.rotate_each(-tm.w)
    outer = xp.matrix_transpose(tm.g3 * uk) @ sk
    return a_sum + outer - u[:, :, None] * s[:, None, :]


def dlog_prob_dt(tm: Terms, ad: Array, bbd: Array) -> Array:
    """∂_t log p_t = Σ_k γ_k [ṁ·S⁻¹r + ½ rᵀS⁻¹ṠS⁻¹r − ½ tr(S⁻¹Ṡ)], with ½Ṡ ↦ c."""
    xp = tm.xp
    c = tm.half_sdot(ad, bbd)
    per_k = xp.vecdot(ad * tm.p.mu_rot[None, ...] + c * tm.w, tm.w, axis=-1) - xp.sum(
        c / tm.v, axis=2
    )
    return xp.sum(tm.gamma * per_k, axis=1)


def posterior_mean(tm: Terms) -> Array:
    """E[z|x] = Σ_k γ_k e_k, e_k = μ_k + α Σ_k S_k⁻¹ r_k."""
    lam = tm.p.lam[None, ...]
    return tm.weighted_means() + tm.rotate_back(tm.gw * (tm.a * lam))


def noise_posterior_mean(tm: Terms) -> Array:
    """E[ε|x] = Σ_k γ_k β S_k⁻¹ r_k."""
    return tm.rotate_back(tm.gw * tm.b)


def posterior_cov_parts(tm: Terms, ez: Array) -> tuple[Array, Array]:
    """(Σ_k γ_k Σ_i λ_{k,i}/v_{k,i}, Σ_k γ_k ||e_k − E[z|x]||²), each shape (n,).

    tr Cov(z|x) = β² · first + second: C_k has eigenvalues λβ²/v (within a component), and the
    between-component part needs no expansion of a square, which would cancel catastrophically
    where tr Cov(z|x) ≪ ||e_k||² (near t = 1, far from the origin). Keeping β² outside lets
    the CFM floor multiply by (α̇β − β̇α)² instead of c_t² = (α̇ − β̇α/β)², finite as β → 0.
    """
    xp = tm.xp
    lam = tm.p.lam[None, ...]
    e_k = tm.p.means[None, ...] + tm.rotate_each((tm.a * lam) * tm.w)
    diff = e_k - ez[:, None, :]
    within = xp.sum(tm.gamma * xp.sum(lam / tm.v, axis=2), axis=1)
    between = xp.sum(tm.gamma * xp.vecdot(diff, diff, axis=-1), axis=1)
    return within, between


def posterior_cov_trace(tm: Terms, ez: Array) -> Array:
    """tr Cov(z|x) = Σ_k γ_k (tr C_k + ||e_k − E[z|x]||²)."""
    within, between = posterior_cov_parts(tm, ez)
    b = tm.xp.reshape(tm.b, (-1,))
    return (b * b) * within + between


def cfm_floor_integrand(tm: Terms, ez: Array, g: Array) -> Array:
    """c_t² tr Cov(z|x) with c_t = g/β, g = α̇β − β̇α of shape (m,); needs β > 0."""
    within, between = posterior_cov_parts(tm, ez)
    c = g / tm.xp.reshape(tm.b, (-1,))
    return (g * g) * within + (c * c) * between


def log_joint(tm: Terms) -> Array:
    """log π_k N(x; m_k, S_k), shape (n, k), recovered from w and v (quad = Σ v w²).

    Restricting to a class needs these per-component terms, not γ_k: log γ_k = joint − log p
    would be −inf wherever γ_k underflows, as it does for x far from the class.
    """
    xp = tm.xp
    d = tm.w.shape[2]
    quad = xp.sum(tm.v * tm.w * tm.w, axis=2)
    log_det = xp.sum(xp.log(tm.v), axis=2)
    return tm.p.log_weights[None, :] - 0.5 * (quad + log_det + d * LOG_2PI)


def given(tm: Terms, member: Array, log_prior: Array) -> Terms:
    """Terms of the class-conditional mixture p_t(x | y) = Σ_{k∈y} (π_k/π_y) N(x; m_k, S_k).

    ``member`` is a boolean (n, k) (or (1, k)) mask of the components of each row's class and
    ``log_prior`` the (n,) (or (1,)) log π_y. The residuals w and eigenvalues v are shared, so
    every quantity computed from Terms (score, u, div u, ∇u, x̂, …) becomes its conditional
    version: γ_k ↦ γ_{k|y} = 1[k∈y] π_k N_k / Σ_{j∈y} π_j N_j, log p ↦ log p_t(x | y).
    """
    xp = tm.xp
    joint = log_joint(tm)
    masked = xp.where(member, joint, xp.full_like(joint, -math.inf))
    log_cond = logsumexp(masked, axis=1, xp=xp)
    gamma = xp.exp(masked - log_cond[:, None])
    return Terms(xp, tm.p, tm.a, tm.b, tm.w, tm.v, log_cond - log_prior, gamma)
