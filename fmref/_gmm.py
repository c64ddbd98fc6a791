"""Eigenbasis kernel for Gaussian mixtures pushed through the path: N(α μ_k, α² Σ_k + β² I).

Each Σ_k = Q_k diag(λ_k) Q_kᵀ is factored once. For every t the covariance S_k = α² Σ_k + β² I
has the same eigenvectors with eigenvalues v = α² λ + β², so with y = Q_kᵀ (x − α μ_k) every
quantity of DESIGN.md §4 is elementwise in (y, v). The two rotations are GEMMs against the
concatenated eigenvectors (d × kd); isotropic and diagonal mixtures skip them (Q_k = I).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """Per-chunk state: rotated residuals, eigenvalues of S_k and responsibilities."""

    xp: Namespace
    p: Params
    x: Array  # (n, d)
    a: Array  # α, (n, 1, 1)
    b: Array  # β, (n, 1, 1)
    y: Array  # (n, k, d)
    v: Array  # (n, k, d)
    log_prob: Array  # (n,)
    gamma: Array  # (n, k)

    @property
    def g3(self) -> Array:
        return self.gamma[:, :, None]

    def rotate_back(self, w: Array) -> Array:
        """Σ_k Q_k w_k for w of shape (n, k, d); one GEMM for full covariances."""
        xp = self.xp
        if self.p.qcat_t is None:
            return xp.sum(w, axis=1)
        n, k, d = w.shape
        return xp.reshape(w, (n, k * d)) @ self.p.qcat_t

    def rotate_each(self, w: Array) -> Array:
        """Q_k w_k per component, shape (n, k, d)."""
        if self.p.q is None:
            return w
        return self.xp.squeeze(self.p.q[None, ...] @ w[..., None], axis=-1)

    def weighted_means(self) -> Array:
        return self.gamma @ self.p.means


def compute(p: Params, x: Array, alpha: Array, beta: Array, xp: Namespace) -> Terms:
    """Rotate residuals, form v = α²λ + β², log p and responsibilities by log-sum-exp."""
    n, d = x.shape
    k = p.lam.shape[0]
    a = xp.reshape(alpha, (n, 1, 1))
    b = xp.reshape(beta, (n, 1, 1))
    if p.qcat is not None:
        y = xp.reshape(x @ p.qcat, (n, k, d))
        y -= a * p.mu_rot[None, ...]
    else:
        y = x[:, None, :] - a * p.means[None, ...]
    v = (a * a) * p.lam[None, ...] + b * b
    quad = xp.sum(y * y / v, axis=2)
    log_det = xp.sum(xp.log(v), axis=2)
    joint = p.log_weights[None, :] - 0.5 * (quad + log_det + d * LOG_2PI)
    log_prob = logsumexp(joint, axis=1, xp=xp)
    gamma = xp.exp(joint - log_prob[:, None])
    return Terms(xp, p, x, a, b, y, v, log_prob, gamma)


def score(tm: Terms) -> Array:
    """∇log p_t = Σ_k γ_k s_k with s_k = −S_k⁻¹ r_k."""
    return tm.rotate_back(-tm.g3 * tm.y / tm.v)


def _gain(tm: Terms, ad: Array, bbd: Array) -> Array:
    """Eigenvalues of A_k = (αα̇Σ_k + ββ̇ I) S_k⁻¹."""
    return (tm.a * ad * tm.p.lam[None, ...] + bbd) / tm.v


def vector_field(tm: Terms, ad: Array, bbd: Array) -> Array:
    """u_t = Σ_k γ_k (α̇ μ_k + A_k r_k); ad, bbd are α̇ and ββ̇ shaped (n, 1, 1)."""
    ad2 = ad[:, :, 0]
    return ad2 * tm.weighted_means() + tm.rotate_back(tm.g3 * _gain(tm, ad, bbd) * tm.y)


def divergence(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """div u = Σ_k γ_k [tr A_k + s_k·u_k] − s·u, with s_k·u_k in the eigenbasis."""
    xp = tm.xp
    g = _gain(tm, ad, bbd)
    sk = -tm.y / tm.v
    uk = ad * tm.p.mu_rot[None, ...] + g * tm.y
    per_k = xp.sum(g, axis=2) + xp.sum(sk * uk, axis=2)
    return xp.sum(tm.gamma * per_k, axis=1) - xp.sum(s * u, axis=1)


def jacobian(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """∇u = Σ_k γ_k [A_k + u_k s_kᵀ] − u sᵀ, shape (n, d, d)."""
    xp = tm.xp
    n, k, d = tm.y.shape
    g = _gain(tm, ad, bbd)
    gw = tm.g3 * g  # (n, k, d)
    if tm.p.q is None:
        eye = xp.eye(d, dtype=u.dtype, device=device(u))
        a_sum = xp.sum(gw, axis=1)[:, :, None] * eye[None, ...]
    else:
        q = tm.p.q[None, ...]  # (1, k, d, d)
        a_sum = xp.sum((q * gw[:, :, None, :]) @ xp.matrix_transpose(q), axis=1)
    uk = ad * tm.p.means[None, ...] + tm.rotate_each(g * tm.y)
    sk = tm.rotate_each(-tm.y / tm.v)
    outer = xp.matrix_transpose(tm.g3 * uk) @ sk
    return a_sum + outer - u[:, :, None] * s[:, None, :]


def dlog_prob_dt(tm: Terms, ad: Array, bbd: Array) -> Array:
    """∂_t log p_t = Σ_k γ_k [ṁ·S⁻¹r + ½ rᵀS⁻¹ṠS⁻¹r − ½ tr(S⁻¹Ṡ)], Ṡ → 2αα̇λ + 2ββ̇."""
    xp = tm.xp
    w = tm.y / tm.v
    vdot = 2 * (tm.a * ad * tm.p.lam[None, ...] + bbd)
    per_k = xp.sum(
        ad * tm.p.mu_rot[None, ...] * w + 0.5 * (w * w - 1 / tm.v) * vdot, axis=2
    )
    return xp.sum(tm.gamma * per_k, axis=1)


def posterior_mean_z(tm: Terms) -> Array:
    """E[z|x] = Σ_k γ_k e_k, e_k = μ_k + α Σ_k S_k⁻¹ r_k."""
    return tm.weighted_means() + tm.rotate_back(tm.g3 * tm.a * tm.p.lam[None, ...] * tm.y / tm.v)


def posterior_mean_eps(tm: Terms) -> Array:
    """E[ε|x] = Σ_k γ_k β S_k⁻¹ r_k."""
    return tm.rotate_back(tm.g3 * tm.b * tm.y / tm.v)


def posterior_cov_trace(tm: Terms, ez: Array) -> Array:
    """tr Cov(z|x) = Σ_k γ_k (tr C_k + ||e_k||²) − ||E[z|x]||², C_k eigenvalues λβ²/v."""
    xp = tm.xp
    lam = tm.p.lam[None, ...]
    e_rot = tm.p.mu_rot[None, ...] + tm.a * lam * tm.y / tm.v
    per_k = xp.sum(lam * (tm.b * tm.b) / tm.v + e_rot * e_rot, axis=2)
    return xp.sum(tm.gamma * per_k, axis=1) - xp.sum(ez * ez, axis=1)

