"""Eigenbasis kernel for Gaussian mixtures pushed through the path: N(α μ_k, α² Σ_k + β² I).

Each Σ_k = Q_k diag(λ_k) Q_kᵀ is factored once. For every t the covariance S_k = α² Σ_k + β² I
has the same eigenvectors with eigenvalues v = α² λ + β², so with y = Q_kᵀ (x − α μ_k) and
w = y / v (that is, Q_kᵀ S_k⁻¹ r_k) every quantity of docs/theory.md is elementwise in w. The
rotation in is one GEMM with the shift folded in where that is provably accurate, else one
batched GEMM of residuals formed first (:func:`compute`); the rotation back is one GEMM
against the concatenated eigenvectors (k d × d). Isotropic and diagonal mixtures skip the
rotations (Q_k = I). docs/numerics.md states for which inputs each quantity is accurate, and
why each formula below has the form it has.

Per-time coefficients (v, and c = αα̇λ + ββ̇, the eigenvalues of ½Ṡ_k) have a leading axis of
1 when every row shares one t, so they cost k·d instead of n·k·d.

The component axis runs over all k components, or (:class:`Slots`, from fmref._prune) over the
few each row keeps: :func:`compute_slots` builds those Terms, and every quantity below reads
the per-component parameters through Terms, so one formula serves both layouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np

from ._xp import (
    LOG_2PI,
    Array,
    Namespace,
    device,
    imul,
    index_assignable,
    isub,
    to_numpy,
    traced,
)


@dataclass(frozen=True)
class Params:
    """Mixture parameters moved to one namespace, device and dtype."""

    log_weights: Array  # (k,)
    means: Array  # (k, d)
    mu_rot: Array  # (k, d): Q_kᵀ μ_k
    mu_hi: Array  # (k, d): μ split as mu_hi + mu_lo into half-width parts (see split)
    mu_lo: Array  # (k, d)
    lam: Array  # (k, d): eigenvalues of Σ_k
    q: Array | None  # (k, d, d) eigenvectors (columns), None when Σ_k is diagonal
    qcat: Array | None  # (d, k d): [Q_1 … Q_K]
    qcat_t: Array | None  # (k d, d): its transpose
    # For the pruning bound (fmref._prune): per component the J eigenvectors of the smallest
    # eigenvalues as columns of one (d, k J) matrix, their eigenvalues and Q_Jᵀ μ_k; J = 0
    # for isotropic and diagonal mixtures.
    low_q: Array  # (d, k J)
    low_lam: Array  # (k, J)
    low_mu: Array  # (k, J)


@dataclass
class Slots:
    """A compact layout: row i keeps only the S components comp[i, :] (fmref._prune).

    Slot 0 holds each row's leading component, and rows come sorted by it, so the rows that
    lead with component c are one contiguous block, ``lead`` lists (c, start, stop), and their
    rotations are GEMMs on slices. The other slots (kept components beyond the first, padded
    with the sentinel k) are grouped by a sort of their pairs: ``order`` lists the flat
    indices into comp[:, 1:] by component, ``spans`` the (c, start, stop) of that order.
    ``valid`` and ``safe`` are derived from ``comp`` once, as every quantity reads them.
    """

    xp: Namespace
    comp: Array  # (n, S) integer, sentinel k on padding
    valid: Array  # (n, S) bool
    safe: Array  # (n S,) comp with padding mapped to 0 (for gathers)
    lead: tuple[tuple[int, int, int], ...]
    order: Array | None  # (n (S − 1),) or None for S = 1
    spans: tuple[tuple[int, int, int], ...]
    n_valid: int  # kept pairs beyond slot 0

    @classmethod
    def build(cls, comp: Array, k: int, xp: Namespace) -> Slots:
        """Slots for comp (n, S): rows sorted by comp[:, 0] < k, padding = k after slot 0."""
        n, s = comp.shape
        first = to_numpy(comp[:, 0])
        if np.any(np.diff(first) < 0) or np.any(first >= k):
            raise ValueError("comp: rows must be sorted by a leading component < k")
        lead = _spans(np.bincount(first, minlength=k)) if n else ()
        flat = xp.reshape(comp, (-1,))
        safe = xp.where(flat < k, flat, xp.zeros_like(flat))
        order = None
        spans: tuple[tuple[int, int, int], ...] = ()
        n_valid = 0
        if s > 1:
            rest = xp.reshape(comp[:, 1:], (-1,))
            order = xp.argsort(rest, stable=True)
            counts = np.bincount(to_numpy(rest), minlength=k + 1)
            spans, n_valid = _spans(counts[:k]), int(counts[:k].sum())
        return cls(xp, comp, comp < k, safe, lead, order, spans, n_valid)

    def gather(self, a: Array) -> Array:
        """a[comp] for a per-component array a of shape (k, ...): shape (n, S, ...)."""
        n, s = self.comp.shape
        return self.xp.reshape(self.xp.take(a, self.safe, axis=0), (n, s, *a.shape[1:]))

    def per_component(self, a: Array, fn: Callable[[int, Array], Array]) -> Array:
        """fn(c, block) on the rows of a (n, S, ...) kept with component c; zero on padding."""
        xp = self.xp
        s = a.shape[1]
        head = xp.concat([fn(c, a[lo:hi, 0, ...]) for c, lo, hi in self.lead], axis=0)
        if s == 1:
            return head[:, None, ...]
        tail = self._scattered(a[:, 1:, ...], fn, head.shape[1:], head.dtype)
        return xp.concat([head[:, None, ...], tail], axis=1)

    def _scattered(
        self, a: Array, fn: Callable[[int, Array], Array], rest: tuple[int, ...], dtype: Any
    ) -> Array:
        """per_component on the slots after the first, (n, S − 1, ...), through the sort."""
        xp = self.xp
        n, s = a.shape[:2]
        order = cast(Array, self.order)
        flat = xp.reshape(a, (n * s, *a.shape[2:]))
        if index_assignable(a):
            # gather and scatter per component: no sorted copy, no concatenation
            out = xp.zeros((n * s, *rest), dtype=dtype, device=device(a))
            for c, lo, hi in self.spans:
                idx = order[lo:hi]
                out[idx, ...] = fn(c, flat[idx, ...])
            return xp.reshape(out, (n, s, *rest))
        srt = xp.take(flat, order, axis=0)
        pieces = [fn(c, srt[lo:hi, ...]) for c, lo, hi in self.spans]
        pieces.append(xp.zeros((n * s - self.n_valid, *rest), dtype=dtype, device=device(a)))
        # no assignment by index arrays (array_api_strict): put the sorted pieces back in order
        inverse = xp.argsort(order, stable=True)
        out = xp.take(xp.concat(pieces, axis=0), inverse, axis=0)
        return xp.reshape(out, (n, s, *rest))


def _spans(counts: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """(c, start, stop) of each nonempty run of a sequence sorted by c with these counts."""
    ends = np.cumsum(counts)
    return tuple((int(c), int(ends[c] - counts[c]), int(ends[c])) for c in np.nonzero(counts)[0])


@dataclass
class Terms:
    """Per-chunk state: w = Q_kᵀ S_k⁻¹ r_k, eigenvalues v of S_k, log p and responsibilities.

    The component axis (of length K) runs over all k components, or, with ``slots``, over
    the S components each row kept (fmref._prune); the per-component parameters below are
    then gathered per row, and every formula of this module reads them the same way.
    """

    xp: Namespace
    p: Params
    a: Array  # α, (m, 1, 1) with m = 1 (shared t) or n
    b: Array  # β, (m, 1, 1)
    w: Array  # (n, K, d)
    v: Array  # (m, K, d)
    log_prob: Array  # (n,)
    gamma: Array  # (n, K)
    slots: Slots | None = None

    def _param(self, a: Array) -> Array:
        return a[None, ...] if self.slots is None else self.slots.gather(a)

    @cached_property
    def lam(self) -> Array:
        """Eigenvalues of Σ_k, (1 or n, K, d)."""
        return self._param(self.p.lam)

    @cached_property
    def mu_rot(self) -> Array:
        """Q_kᵀ μ_k, (1 or n, K, d)."""
        return self._param(self.p.mu_rot)

    @cached_property
    def means(self) -> Array:
        """μ_k, (1 or n, K, d)."""
        return self._param(self.p.means)

    @cached_property
    def log_weights(self) -> Array:
        """log π_k, (1 or n, K); −inf on padding slots."""
        lw = self._param(self.p.log_weights)
        if self.slots is None:
            return lw
        return self.xp.where(self.slots.valid, lw, self.xp.full_like(lw, -math.inf))

    @property
    def g3(self) -> Array:
        return self.gamma[:, :, None]

    @cached_property
    def gw(self) -> Array:
        """γ_k w_k, shared by the score, the velocity and the posterior means."""
        return self.g3 * self.w

    def _rotate(self, w: Array, transpose: bool) -> Array:
        """w_k @ Q_kᵀ (transpose) or w_k @ Q_k per kept pair, over the slots' groups."""
        q, slots = cast(Array, self.p.q), cast(Slots, self.slots)
        if transpose:
            # Q_cᵀ as a contiguous block of qcat_t (no transposed view per call)
            qt, d = cast(Array, self.p.qcat_t), w.shape[2]
            return slots.per_component(w, lambda c, blk: blk @ qt[c * d : (c + 1) * d, :])
        return slots.per_component(w, lambda c, blk: blk @ q[c, ...])

    def rotate_back(self, w: Array) -> Array:
        """Σ_k Q_k w_k for w of shape (n, K, d); one GEMM for full covariances."""
        if self.p.q is not None and self.slots is not None:
            return self.xp.sum(self._rotate(w, True), axis=1)
        if self.p.qcat_t is None or self.slots is not None:
            return self.xp.sum(w, axis=1)
        n, k, d = w.shape
        return self.xp.reshape(w, (n, k * d)) @ self.p.qcat_t

    def rotate_in(self, x: Array) -> Array:
        """Q_kᵀ x for every k, shape (n, K, d) (a broadcast view without rotations)."""
        if self.p.q is None:
            return x[:, None, :]
        n, d = x.shape
        if self.slots is not None:
            s = self.slots.comp.shape[1]
            return self._rotate(self.xp.broadcast_to(x[:, None, :], (n, s, d)), False)
        return self.xp.reshape(x @ self.p.qcat, (n, self.p.lam.shape[0], d))

    def rotate_each(self, w: Array) -> Array:
        """Q_k w_k per component, shape (n, K, d)."""
        if self.p.q is None:
            return w
        if self.slots is not None:
            return self._rotate(w, True)
        return self.xp.squeeze(self.p.q[None, ...] @ w[..., None], axis=-1)

    def sum_rotated_diag(self, g: Array) -> Array:
        """Σ_k Q_k diag(g_k) Q_kᵀ for g of shape (n, K, d): shape (n, d, d)."""
        xp = self.xp
        d = g.shape[2]
        if self.p.q is None:
            eye = xp.eye(d, dtype=g.dtype, device=device(g))
            return xp.sum(g, axis=1)[:, :, None] * eye[None, ...]
        q = self.p.q
        if self.slots is not None:

            def one(c: int, blk: Array) -> Array:
                return (q[c, ...][None, ...] * blk[:, None, :]) @ xp.matrix_transpose(q[c, ...])

            return xp.sum(self.slots.per_component(g, one), axis=1)
        return xp.sum((q[None, ...] * g[:, :, None, :]) @ xp.matrix_transpose(q[None, ...]), axis=1)

    def weighted_means(self) -> Array:
        if self.slots is None:
            return self.gamma @ self.p.means
        return self.xp.sum(self.g3 * self.means, axis=1)

    def responsibilities(self) -> Array:
        """γ over all k components, (n, k) (zero for pruned ones)."""
        if self.slots is None:
            return self.gamma
        xp = self.xp
        k = self.p.lam.shape[0]
        ks = xp.arange(k, dtype=self.slots.comp.dtype, device=device(self.gamma))
        hit = xp.astype(self.slots.comp[:, :, None] == ks[None, None, :], self.gamma.dtype)
        return xp.sum(self.g3 * hit, axis=1)

    def half_sdot(self, ad: Array, bbd: Array) -> Array:
        """c = αα̇λ + ββ̇: eigenvalues of ½Ṡ_k, so A_k r_k ↦ c·w and tr A_k = Σ c/v."""
        return (self.a * ad) * self.lam + bbd


def compute(p: Params, x: Array, alpha: Array, beta: Array, xp: Namespace) -> Terms:
    """Form whitened residuals in each eigenbasis, v = α²λ + β², log p and responsibilities.

    ``alpha`` and ``beta`` have shape (n,) or (1,) (one t shared by every row).

    Full covariances first take the fast route, one GEMM [x, 1] @ [Q; −α μ̃] (the shift folded
    into the rotation), whose rounding error is at most ≈ (d + 2)·ε·(|x| + α|μ_k|)/√v. Where
    that bound is not far below the whitened residual itself (|μ_k| ≫ the spread, or x at a
    mode), the chunk is recomputed by the exact route: residuals x − α μ_k formed first, exact
    to one rounding (:func:`_residual`), then rotated by one batched GEMM, k products of
    (n × d) by (d × d). Isotropic and diagonal mixtures always take the exact route (no GEMM).
    """
    a = xp.reshape(alpha, (-1, 1, 1))
    b = xp.reshape(beta, (-1, 1, 1))
    v = (a * a) * p.lam[None, ...] + b * b
    inv_sqrt_v = 1 / xp.sqrt(v)
    y = None
    if p.q is not None:
        y = _rotate_fast(p, x, alpha, inv_sqrt_v, xp)
        quad = xp.vecdot(y, y, axis=-1)
        if not _fast_is_exact(p, x, alpha, v, quad, xp):
            del y, quad
            y = _rotate_exact(p, x, alpha, inv_sqrt_v, xp)
            quad = xp.vecdot(y, y, axis=-1)
    else:
        y = _residual(
            x[:, None, :], a, p.means[None, ...], p.mu_hi[None, ...], p.mu_lo[None, ...], xp
        )
        y = imul(y, inv_sqrt_v)
        quad = xp.vecdot(y, y, axis=-1)
    return _finish(p, y, quad, v, inv_sqrt_v, a, b, p.log_weights[None, :], xp)


def restrict(tm: Terms, pos: Array, slots: Slots) -> Terms:
    """The Terms of rows ``pos`` of ``tm``, laid out by ``slots`` (the same components)."""
    xp = tm.xp

    def rows(a: Array) -> Array:
        return a if a.shape[0] == 1 else xp.take(a, pos, axis=0)

    w, lp, g = (xp.take(v, pos, axis=0) for v in (tm.w, tm.log_prob, tm.gamma))
    return Terms(xp, tm.p, rows(tm.a), rows(tm.b), w, rows(tm.v), lp, g, slots)


def compute_slots(
    p: Params, x: Array, alpha: Array, beta: Array, slots: Slots, xp: Namespace
) -> Terms:
    """:func:`compute` for the components each row kept (``slots``, from fmref._prune).

    Always the exact route: residuals x − α μ_k formed first for each kept pair, then one
    GEMM per component over the rows that kept it (no shift folded into a rotation).
    """
    a = xp.reshape(alpha, (-1, 1, 1))
    b = xp.reshape(beta, (-1, 1, 1))
    mu, hi, lo = (slots.gather(m) for m in (p.means, p.mu_hi, p.mu_lo))
    y = _residual(x[:, None, :], a, mu, hi, lo, xp)  # (n, S, d)
    del mu, hi, lo
    if a.shape[0] == 1:
        # one t: v, v^{-1/2} and log det per component, gathered per row
        vk = (a * a) * p.lam[None, ...] + b * b
        v, inv_sqrt_v = slots.gather(vk[0, ...]), slots.gather(1 / xp.sqrt(vk[0, ...]))
        log_det = slots.gather(xp.sum(xp.log(vk[0, ...]), axis=1))
    else:
        v = (a * a) * slots.gather(p.lam) + b * b
        inv_sqrt_v, log_det = 1 / xp.sqrt(v), None
    if p.q is not None:
        q = p.q
        y = slots.per_component(y, lambda c, blk: blk @ q[c, ...])
    y = imul(y, inv_sqrt_v)
    # padding slots hold a real component's residual; zero them so γ = 0 meets no inf
    y = xp.where(slots.valid[:, :, None], y, xp.zeros_like(y))
    quad = xp.vecdot(y, y, axis=-1)
    lw = slots.gather(p.log_weights)
    lw = xp.where(slots.valid, lw, xp.full_like(lw, -math.inf))
    return _finish(p, y, quad, v, inv_sqrt_v, a, b, lw, xp, slots, log_det)


def _finish(
    p: Params,
    y: Array,
    quad: Array,
    v: Array,
    inv_sqrt_v: Array,
    a: Array,
    b: Array,
    log_weights: Array,
    xp: Namespace,
    slots: Slots | None = None,
    log_det: Array | None = None,
) -> Terms:
    """Terms from whitened residuals y, their squared norms ``quad`` and eigenvalues v."""
    d = y.shape[2]
    # y is the whitened residual S_k^{-1/2} r_k in the eigenbasis: its squared norm is the
    # quadratic form, and one more in-place scaling gives w without a new (n, k, d) array.
    if log_det is None:
        log_det = xp.sum(xp.log(v), axis=2)
    joint = log_weights - 0.5 * (quad + log_det + d * LOG_2PI)
    y = imul(y, inv_sqrt_v)
    log_prob, gamma, ok = _normalise(joint, xp)
    if traced(ok) or not bool(xp.all(ok)):
        gamma = xp.where(ok, gamma, _overflow_limit(y * xp.sqrt(v), log_weights, xp))
    return Terms(xp, p, a, b, y, v, log_prob, gamma, slots)


def _rotate_fast(p: Params, x: Array, alpha: Array, inv_sqrt_v: Array, xp: Namespace) -> Array:
    """Whitened residuals by one GEMM with the shift folded in: [x, 1] @ [Q s; −α μ̃ s].

    With one shared t the columns are scaled by s = v^{-1/2} inside the GEMM; with per-row t
    the GEMM is [x, α] @ [Q; −μ̃] and the scaling follows.
    """
    n, d = x.shape
    k = p.lam.shape[0]
    mu_row = -xp.reshape(p.mu_rot, (1, k * d))
    if alpha.shape[0] == 1:
        scale = xp.reshape(inv_sqrt_v, (1, k * d))
        rhs = xp.concat([p.qcat * scale, (alpha[0] * mu_row) * scale], axis=0)
        last = xp.ones((n, 1), dtype=x.dtype, device=device(x))
        return xp.reshape(xp.concat([x, last], axis=1) @ rhs, (n, k, d))
    rhs = xp.concat([p.qcat, mu_row], axis=0)
    y = xp.reshape(xp.concat([x, alpha[:, None]], axis=1) @ rhs, (n, k, d))
    return imul(y, inv_sqrt_v)


def _fast_is_exact(p: Params, x: Array, alpha: Array, v: Array, quad: Array, xp: Namespace) -> bool:
    """Whether the fast route's error bound is below 0.01·√ε of every whitened residual.

    Each entry of x Q_k − α μ̃_k is a sum of d + 1 terms bounded by |x| and α|μ_k|, so its
    rounding error is ≤ (d + 1)·ε·(|x| + α|μ_k|); whitened, the error norm is at most that
    times ‖v_k^{-1/2}‖. 0.01·√ε (1.5e-10 in float64, 3.5e-6 in float32) leaves the
    documented tolerances three orders of magnitude.
    """
    if traced(x, alpha, quad):  # no values to bound: the exact route is exact for all
        return False
    d = x.shape[1]
    eps = float(xp.finfo(x.dtype).eps)
    x_norm = xp.sqrt(xp.vecdot(x, x, axis=-1))[:, None]
    mu_norm = xp.sqrt(xp.vecdot(p.means, p.means, axis=-1))[None, :]
    s_norm = xp.sqrt(xp.sum(1 / v, axis=2))  # (m, k)
    bound = (d + 2) * eps * (x_norm + xp.reshape(alpha, (-1, 1)) * mu_norm) * s_norm
    return bool(xp.all(bound <= 0.01 * math.sqrt(eps) * xp.sqrt(quad)))


def _rotate_exact(p: Params, x: Array, alpha: Array, inv_sqrt_v: Array, xp: Namespace) -> Array:
    """Whitened residuals from residuals formed first, then one batched GEMM (k × n × d × d)."""
    n, d = x.shape
    k = p.lam.shape[0]
    mu = (p.means[:, None, :], p.mu_hi[:, None, :], p.mu_lo[:, None, :])
    r = _residual(x[None, ...], xp.reshape(alpha, (1, -1, 1)), *mu, xp)  # (k, n, d)
    shared = alpha.shape[0] == 1
    # One t: whiten inside the GEMM, Q_k diag(v_k^{-1/2}), a k·d² rescaling per call.
    q = p.q * inv_sqrt_v[0, ...][:, None, :] if shared else p.q
    y = xp.permute_dims(r @ q, (1, 0, 2))
    del r
    # reshape copies the permuted product into row-major (n, k, d) once, so every later pass
    # and the rotation back read contiguous memory
    y = xp.reshape(xp.reshape(y, (n, k * d)), (n, k, d))
    if not shared:
        y = imul(y, inv_sqrt_v)
    return y


def split(a: Array, xp: Namespace) -> tuple[Array, Array]:
    """Split a = hi + lo exactly, hi carrying the upper half of the significand (Veltkamp).

    A product of two halves is exact (Dekker's splitting, no FMA needed). Entries too large to
    split (|a| > max/2²⁷) stay whole.
    """
    bits = 53 if a.dtype == xp.float64 else 24
    c = (2.0 ** ((bits + 1) // 2) + 1) * a
    hi = c - (c - a)
    ok = xp.isfinite(hi)
    hi = xp.where(ok, hi, a)
    return hi, xp.where(ok, a - hi, xp.zeros_like(a))


def _residual(x: Array, a: Array, mu: Array, mu_hi: Array, mu_lo: Array, xp: Namespace) -> Array:
    """x − α μ, broadcast, exact to one rounding of the result wherever x is near α μ.

    With α = α_hi + α_lo split like μ, α_hi μ_hi is exact (two half-width factors), so
    x − α_hi μ_hi is exact near α μ (Sterbenz), and the rest, α_hi μ_lo + α_lo μ, is 2⁻²⁶ of
    α μ (2⁻¹² in float32), rounded far below the residual. Plain x − fl(α μ) carries an error
    ε·|α μ|, which swamps the residual where |μ| ≫ √v, e.g. for Dirac data near t = 1.
    """
    a_hi, a_lo = split(a, xp)
    return isub(x - a_hi * mu_hi, a_hi * mu_lo + a_lo * mu)


def _normalise(joint: Array, xp: Namespace) -> tuple[Array, Array, Array]:
    """Return log p = log Σ_k exp(joint_k), γ_k renormalised to sum to one, and finite rows.

    exp(joint − lse) alone loses its normalisation once |log p| ≫ 1/ε (lse is rounded to a
    spacing of ε·|log p|, and every γ_k inherits that error as a common factor); dividing by
    the sum restores Σγ = 1 up to rounding.
    """
    m = xp.max(joint, axis=1, keepdims=True)
    ok = xp.isfinite(m)
    e = xp.exp(joint - xp.where(ok, m, xp.zeros_like(m)))
    total = xp.where(ok, xp.sum(e, axis=1, keepdims=True), xp.ones_like(m))
    return xp.squeeze(xp.log(total) + m, axis=1), e / total, ok


def _overflow_limit(y: Array, log_weights: Array, xp: Namespace) -> Array:
    """γ where every quadratic form overflowed (|y| > 1e154): its limit as the scale grows.

    The mass goes to the smallest quadratic form (split evenly between ties), compared after
    dividing the whitened residuals ``y`` (n, k, d) of each row by their largest entry, among
    the components whose ``log_weights`` ((k,), or (n, k) for a class per row) are finite.
    """
    scale = xp.max(xp.max(xp.abs(y), axis=2), axis=1)[:, None, None]
    ys = y / xp.where(scale > 0, scale, xp.ones_like(scale))
    lw = log_weights if log_weights.ndim == 2 else log_weights[None, :]  # (k,) or per row
    qs = xp.where(lw > -math.inf, xp.vecdot(ys, ys, axis=-1), math.inf)
    top = xp.astype(qs == xp.min(qs, axis=1, keepdims=True), y.dtype)
    return top / xp.sum(top, axis=1, keepdims=True)


def score(tm: Terms) -> Array:
    """∇log p_t = Σ_k γ_k s_k with s_k = −S_k⁻¹ r_k."""
    return -tm.rotate_back(tm.gw)


def vector_field(tm: Terms, ad: Array, bbd: Array) -> Array:
    """u_t = Σ_k γ_k (α̇ μ_k + A_k r_k); ad, bbd are α̇ and ββ̇ shaped (m, 1, 1)."""
    mean_part = ad[:, :, 0] * tm.weighted_means()
    return mean_part + tm.rotate_back(tm.gw * tm.half_sdot(ad, bbd))


def divergence(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """div u = Σ_k γ_k [tr A_k + (s_k − s)·(u_k − u)], in each component's eigenbasis.

    Equal to Σ_k γ_k [tr A_k + s_k·u_k] − s·u when Σγ = 1, but centred: that form subtracts
    terms of size |r|²/v to leave one of size tr A_k, and loses all digits a few thousand
    standard deviations from the modes (or near t = 1 for Dirac data, where v = β² → 0). The
    plain form needs no extra rotation, so it is used where its rounding error, bounded by
    (d + 2)·ε·(Σ_k γ_k |w_k||Q_kᵀu_k| + |s||u|), is below 0.01·√ε of Σ_k γ_k |tr A_k|;
    otherwise Q_kᵀ(s_k − s) = −w_k − Q_kᵀ s and Q_kᵀ(u_k − u) = α̇ μ̃_k + c w_k − Q_kᵀ u, the
    rotations of s and u being one GEMM.
    """
    xp = tm.xp
    d = tm.w.shape[2]
    c = tm.half_sdot(ad, bbd)
    tr_a = xp.sum(c / tm.v, axis=2)
    uk = ad * tm.mu_rot + c * tm.w
    plain = xp.sum(tm.gamma * (tr_a - xp.vecdot(tm.w, uk, axis=-1)), axis=1) - xp.vecdot(
        s, u, axis=-1
    )
    eps = float(xp.finfo(u.dtype).eps)
    norms = xp.sqrt(xp.vecdot(tm.w, tm.w, axis=-1) * xp.vecdot(uk, uk, axis=-1))
    size = xp.sum(tm.gamma * norms, axis=1) + xp.sqrt(
        xp.vecdot(s, s, axis=-1) * xp.vecdot(u, u, axis=-1)
    )
    floor = xp.sum(tm.gamma * xp.abs(tr_a), axis=1)
    # traced (JAX): no values to test, so the centred form, exact for every input
    if not traced(size) and bool(xp.all((d + 2) * eps * size <= 0.01 * math.sqrt(eps) * floor)):
        return plain
    del plain, norms
    ds = -tm.w - tm.rotate_in(s)
    du = uk - tm.rotate_in(u)
    return xp.sum(tm.gamma * (tr_a + xp.vecdot(ds, du, axis=-1)), axis=1)


def jacobian(tm: Terms, ad: Array, bbd: Array, u: Array, s: Array) -> Array:
    """∇u = Σ_k γ_k [A_k + (u_k − u)(s_k − s)ᵀ], shape (n, d, d); centred as in divergence."""
    xp = tm.xp
    c = tm.half_sdot(ad, bbd)
    gw = tm.g3 * (c / tm.v)  # (n, k, d): γ_k times the eigenvalues of A_k
    a_sum = tm.sum_rotated_diag(gw)
    uk = ad * tm.means + tm.rotate_each(c * tm.w) - u[:, None, :]
    sk = tm.rotate_each(-tm.w) - s[:, None, :]
    return a_sum + xp.matrix_transpose(tm.g3 * uk) @ sk


def dlog_prob_dt(tm: Terms, ad: Array, bbd: Array) -> Array:
    """∂_t log p_t = Σ_k γ_k [ṁ·S⁻¹r + ½ rᵀS⁻¹ṠS⁻¹r − ½ tr(S⁻¹Ṡ)], with ½Ṡ ↦ c."""
    xp = tm.xp
    c = tm.half_sdot(ad, bbd)
    per_k = xp.vecdot(ad * tm.mu_rot + c * tm.w, tm.w, axis=-1) - xp.sum(c / tm.v, axis=2)
    return xp.sum(tm.gamma * per_k, axis=1)


def posterior_mean(tm: Terms) -> Array:
    """E[z|x] = Σ_k γ_k e_k, e_k = μ_k + α Σ_k S_k⁻¹ r_k."""
    lam = tm.lam
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
    lam = tm.lam
    e_k = tm.means + tm.rotate_each((tm.a * lam) * tm.w)
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
    return tm.log_weights - 0.5 * (quad + log_det + d * LOG_2PI)


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
    log_cond, gamma, ok = _normalise(masked, xp)
    if traced(ok) or not bool(xp.all(ok)):
        lw = xp.where(member, tm.log_weights, xp.full_like(masked, -math.inf))
        gamma = xp.where(ok, gamma, _overflow_limit(tm.w * xp.sqrt(tm.v), lw, xp))
    return Terms(xp, tm.p, tm.a, tm.b, tm.w, tm.v, log_cond - log_prior, gamma, tm.slots)
