"""Which mixture components each row may drop, proven before any rotation (docs/numerics.md §6).

At a point of p_t far from all but a few modes (exact samples for t ≳ 0.5 with well separated
components) every other component's responsibility is far below what a float can hold, so its
rotation (d² flops per row and component) is wasted work. Component k may be dropped from a
row when an upper bound on its joint log π_k N(x; α μ_k, S_k), plus the log of a bound M_k on
the size of anything it contributes to, lies ln δ below a lower bound on log p_t(x):

- upper bound: the quadratic form r_kᵀ S_k⁻¹ r_k (r_k = x − α μ_k, S_k with eigenvalues
  v = α² λ + β²) is at least ‖r_k‖²/v_max + Σ_{i∈J} (1/v_i − 1/v_max)(q_iᵀ r_k)², J the J
  eigenvectors of Σ_k with the smallest eigenvalues (J = d/8 up to 8 for full Σ_k; none for
  isotropic Σ_k, where the first term is exact, nor for diagonal ones). ‖r_k‖² and q_iᵀ r_k
  are expanded (one (n × d)·(d × k) GEMM, one (n × d)·(d × k J)) and lowered by their
  rounding bound, so the cancellation of the expansion far from the origin only loosens it;
- lower bound: the exact joint of one component per row (the one of largest upper bound),
  computed in the compact layout, is at most log p_t(x);
- M_k bounds |w_k|, |u_k|, |e_k|, |ε_k|, tr A_k (γ-weighted in every quantity) by 1 + |μ_k|(1 +
  |α̇|) + ρ_k (1 + max|c| + α λ_max + β) + d max|c|/v_min, ρ_k = ‖r_k‖/v_min; products of two
  (divergence, Jacobian, ∂_t log p, covariance) are bounded by M_k², hence 2 ln M_k.

δ = ε²/e of the dtype (one nat for the bound's own rounding), so the dropped terms change each
quantity by less than ε² times its scale: far below the rounding of the full sum. Dropping γ_k
moves a quantity Σ_j γ_j q_j by at most γ_k(|q_k| + |q|) (renormalising the rest included),
and a product term such as (s_k − s)·(u_k − u) by γ_k(M_k + |s|)(M_k + |u|).

Rows that keep more components than :func:`max_slots` allows take the dense kernel; a chunk
where pruning would save less than a quarter of the work is left whole (decided on its first
PROBE rows when it is large).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _gmm
from ._xp import LOG_2PI, Array, Namespace, device, from_numpy, is_numpy, to_numpy, traced
from .schedules import ScheduleValues

#: At most this many eigen-directions per component sharpen the bound (an (n × d)·(d × k J)
#: GEMM, J/d of one rotation).
J_MAX = 8
#: Prune only when the compact layout does at most this share of the dense work.
MAX_SHARE = 0.75
#: Plan only where a row's dense work, about 30·k·d operations (elementwise passes) plus 6·k·d²
#: for the rotations of full covariances, is at least this: below it the dense kernel costs
#: about what a plan does (measured: k = 8, d = 16, full, a time per row).
MIN_ROW_WORK = 20_000
#: Rows beyond the first that a compact row may keep (more: the dense kernel).
MAX_OTHERS = 7
#: Chunks of more than 4 PROBE rows first plan their first PROBE rows: if pruning does not pay
#: there (points between the modes, small t), the chunk goes dense without a full plan.
PROBE = 256


def max_slots(k: int) -> int:
    """The most components a row of the compact layout keeps (for chunk sizing)."""
    return max(2, min(k // 4, MAX_OTHERS + 1))


def log_delta(eps: float) -> float:
    """ln δ: dropped components carry at most δ = ε²/e of each quantity's scale."""
    return 2 * math.log(eps) - 1


def directions(lam: np.ndarray, q: np.ndarray | None, means: np.ndarray) -> tuple[np.ndarray, ...]:
    """(low_q (d, k J), low_lam (k, J), low_mu (k, J)) for :class:`fmref._gmm.Params`.

    ``lam`` (k, d) and ``q`` (k, d, d) are the eigenvalues and eigenvectors (columns) of Σ_k.
    Empty (J = 0) for isotropic or diagonal mixtures (``q`` None) and for d < 8.
    """
    k, d = lam.shape
    j = min(J_MAX, d // 8)
    if q is None or j == 0:
        return np.zeros((d, 0)), np.zeros((k, 0)), np.zeros((k, 0))
    idx = np.argsort(lam, axis=1, kind="stable")[:, :j]  # (k, J) smallest eigenvalues
    low = np.take_along_axis(q, idx[:, None, :], axis=2)  # (k, d, J)
    low_q = np.transpose(low, (1, 0, 2)).reshape(d, k * j)
    low_lam = np.take_along_axis(lam, idx, axis=1)
    low_mu = np.einsum("kdj,kd->kj", low, means)
    return low_q, low_lam, low_mu


@dataclass(frozen=True)
class Pruned:
    """Pieces of a chunk: (rows, Terms) in the compact layout, and the ``dense`` rows.

    Row indices are host (NumPy) arrays into the chunk; each piece's rows are sorted by their
    leading component (see :class:`fmref._gmm.Slots`), and the dense rows keep too many
    components for the compact layout to pay.
    """

    pieces: tuple[tuple[np.ndarray, _gmm.Terms], ...]
    dense: np.ndarray


def compute(
    p: _gmm.Params,
    x: Array,
    sv: ScheduleValues,
    xp: Namespace,
    *,
    covariance: bool = False,
    probe: bool = True,
) -> Pruned | None:
    """Kernel terms of x at the schedule values ``sv`` ((1,) shared or (n,) per row) without
    the pruned components.

    None when nothing worth pruning was found (or the bounds are not finite, e.g. for points
    whose squared distances overflow: the dense kernel handles those).

    ``covariance``: the posterior covariance (tr Cov(z|x), the CFM floor) is wanted. Its
    between-component part Σ_k γ_k‖e_k − E[z|x]‖² is of the size of the second-largest γ_k
    when one component dominates, so it is exact to ε² of its size only if that size has a
    floor: the within part β² Σ_k γ_k Σ_i λ_i/v_i ≥ β² min_k λ_min/v_max. δ is scaled by that
    floor; for singular data (some λ = 0) nothing is pruned.
    """
    alpha, beta = sv.alpha, sv.beta
    if traced(x, alpha, beta):
        return None
    n = x.shape[0]
    k = p.lam.shape[0]
    d = x.shape[1]
    if n == 0 or k < 4 or k * d * (30 + (0 if p.q is None else 6 * d)) < MIN_ROW_WORK:
        return None
    eps = float(xp.finfo(x.dtype).eps)
    cut = log_delta(eps)
    if covariance:
        # smallest over rows and components: least β², largest α²
        b2, a2 = xp.min(beta * beta), xp.max(alpha * alpha)
        floor = float(b2 * xp.min(xp.min(p.lam, axis=1) / (xp.max(p.lam, axis=1) * a2 + b2)))
        if not floor > 0:
            return None
        cut += math.log(min(1.0, floor))
    if probe and n > 4 * PROBE:
        # plan the first rows alone: when pruning does not pay there, the rest is not planned
        head, tail = slice(0, PROBE), slice(PROBE, n)
        lead = compute(p, x[:PROBE, ...], sv.rows(head, xp), xp, covariance=covariance, probe=False)
        if lead is None:
            return None
        rest = compute(p, x[PROBE:, ...], sv.rows(tail, xp), xp, covariance=covariance, probe=False)
        if rest is None:
            return Pruned(lead.pieces, np.concatenate([lead.dense, np.arange(PROBE, n)]))
        moved = tuple((rows + PROBE, tm) for rows, tm in rest.pieces)
        return Pruned(lead.pieces + moved, np.concatenate([lead.dense, rest.dense + PROBE]))
    joint_hi, log_size = bounds(p, x, sv, xp)
    # bounds log γ_k + 2 log M_k + log p_t(x) from above
    upper = joint_hi + 2 * log_size
    if not bool(xp.all(xp.isfinite(upper))):
        return None
    # log p_t(x) ≤ max_k joint_k + log k, so a component whose bound is within |ln δ| + log k
    # of the largest is kept whatever the exact pass finds: when those alone leave too much
    # work (points between the modes, small t), stop before the exact pass.
    margin = cut - math.log(k)
    top = xp.max(upper, axis=1, keepdims=True)
    surely = np.maximum(to_numpy(xp.sum(xp.astype(upper >= top + margin, xp.int64), axis=1)) - 1, 0)
    if _slot_count(surely, k)[1] > MAX_SHARE * n * k:
        return None

    # Rows sorted by the component of largest bound: its exact joint, computed for every row
    # (and all there is for rows that keep only it), bounds log p_t(x) from below.
    best_h = to_numpy(xp.argmax(upper, axis=1))
    perm = np.argsort(best_h, kind="stable")
    dev = device(x)
    rows = from_numpy(perm, xp, dev, xp.int64)
    best = from_numpy(best_h[perm], xp, dev, xp.int64)
    svs, xs = sv.rows(rows, xp), xp.take(x, rows, axis=0)
    one = _gmm.Slots.build(best[:, None], k, xp)
    first = _gmm.compute_slots(p, xs, svs.alpha, svs.beta, one, xp)
    if not bool(xp.all(xp.isfinite(first.log_prob))):
        return None
    ks = xp.arange(k, dtype=xp.int64, device=dev)
    keep = xp.take(upper, rows, axis=0) >= first.log_prob[:, None] + cut
    keep = keep & (ks[None, :] != best[:, None])  # the others kept besides the first
    counts = to_numpy(xp.sum(xp.astype(keep, xp.int64), axis=1))
    s, work = _slot_count(counts, k)
    if work > MAX_SHARE * n * k:
        return None

    pieces = []
    alone = np.nonzero(counts == 0)[0]
    if alone.size:
        pos = from_numpy(alone, xp, dev, xp.int64)
        slots = _gmm.Slots.build(xp.take(best, pos, axis=0)[:, None], k, xp)
        pieces.append((perm[alone], _gmm.restrict(first, pos, slots)))
    few = np.nonzero((counts > 0) & (counts < s))[0]
    if few.size:
        pos = from_numpy(few, xp, dev, xp.int64)
        mask = xp.take(keep, pos, axis=0)
        others = xp.where(mask, ks[None, :], xp.full_like(mask, k, dtype=xp.int64))
        comp = xp.concat(
            [xp.take(best, pos, axis=0)[:, None], xp.sort(others, axis=1)[:, : s - 1]], axis=1
        )
        svf, xf = svs.rows(pos, xp), xp.take(xs, pos, axis=0)
        tm = _gmm.compute_slots(p, xf, svf.alpha, svf.beta, _gmm.Slots.build(comp, k, xp), xp)
        pieces.append((perm[few], tm))
    return Pruned(tuple(pieces), perm[counts >= s])


def bounds(p: _gmm.Params, x: Array, sv: ScheduleValues, xp: Namespace) -> tuple[Array, Array]:
    """(upper bounds on log π_k N(x; α μ_k, S_k), log M_k), each (n, k), for x (n, d).

    M_k ≥ 1 bounds the norms of w_k = S_k⁻¹ r_k, u_k, e_k, β w_k and tr A_k (module docstring);
    rates that are not finite count as 0 (the quantities using them are refused there).
    """
    d = x.shape[1]
    eps = float(xp.finfo(x.dtype).eps)
    a = xp.reshape(sv.alpha, (-1, 1))  # (m, 1)
    b = xp.reshape(sv.beta, (-1, 1))
    ad = xp.reshape(_finite_or_zero(sv.alpha_dot, xp), (-1, 1))
    bbd = xp.reshape(_finite_or_zero(sv.beta_beta_dot, xp), (-1, 1))
    lam_max = xp.max(p.lam, axis=1)[None, :]  # (1, k)
    lam_min = xp.min(p.lam, axis=1)[None, :]
    v_max = a * a * lam_max + b * b  # (m, k)
    v_min = a * a * lam_min + b * b
    log_det = _log_det_low(p, a, b, lam_min, lam_max, v_min, v_max, xp)  # (m, k)

    xx = xp.vecdot(x, x, axis=-1)[:, None]  # (n, 1)
    mm = xp.vecdot(p.means, p.means, axis=-1)[None, :]  # (1, k)
    mu_norm = xp.sqrt(mm)
    reach = xp.sqrt(xx) + a * mu_norm  # (n, k): bounds |x| + α|μ_k|
    r2 = xx - 2 * a * (x @ xp.matrix_transpose(p.means)) + (a * a) * mm
    slack = (d + 8) * eps * reach * reach
    quad_lo = xp.clip(r2 - slack, min=0.0) / v_max
    if p.low_q.shape[1] > 0:
        quad_lo = quad_lo + _low_gain(p, x, a, b, v_max, reach, eps, xp)
    c_max = xp.maximum(xp.abs(a * ad * lam_max + bbd), xp.abs(a * ad * lam_min + bbd))
    size = (
        1
        + mu_norm * (1 + xp.abs(ad))
        + xp.sqrt(r2 + slack) / v_min * (1 + c_max + a * lam_max + b)
        + d * c_max / v_min
    )
    joint_hi = p.log_weights[None, :] - 0.5 * (quad_lo + log_det + d * LOG_2PI)
    return joint_hi, xp.log(size)


def _log_det_low(
    p: _gmm.Params,
    a: Array,
    b: Array,
    lam_min: Array,
    lam_max: Array,
    v_min: Array,
    v_max: Array,
    xp: Namespace,
) -> Array:
    """log det S_k = Σ_i log(α² λ_i + β²), or a lower bound on it, shape (m, k).

    ``a``, ``b`` (m, 1) are α and β, ``lam_min``, ``lam_max`` (1, k) each component's extreme
    eigenvalues and ``v_min``, ``v_max`` (m, k) the matching α² λ + β². Exact for one shared t
    (k·d logarithms). For a time per row that would be n·k·d, so the bound uses that log is
    concave: each log v_i lies above the chord between v_min and v_max, so the sum is at least
    d log v_min + (Σ_i λ_i − d λ_min)/(λ_max − λ_min)·log(v_max/v_min).
    """
    if a.shape[0] == 1:
        a3, b3 = a[:, :, None], b[:, :, None]
        return xp.sum(xp.log(a3 * a3 * p.lam[None, ...] + b3 * b3), axis=2)
    d = p.lam.shape[1]
    spread = lam_max - lam_min
    share = (xp.sum(p.lam, axis=1)[None, :] - d * lam_min) / xp.where(spread > 0, spread, 1.0)
    # the chord's own rounding: a relative ε·d on each term, below the one nat of log_delta
    return d * xp.log(v_min) + share * xp.log(v_max / v_min)


def _low_gain(
    p: _gmm.Params,
    x: Array,
    a: Array,
    b: Array,
    v_max: Array,
    reach: Array,
    eps: float,
    xp: Namespace,
) -> Array:
    """Lower bound on Σ_{i∈J} (1/v_i − 1/v_max)(q_iᵀ r_k)², shape (n, k).

    With weights ω_i = (1/v_i − 1/v_max)^{1/2} folded into the columns (and, for one shared t,
    the shift −α q_iᵀ μ_k folded in as a last row), one GEMM gives the weighted projections
    p̃ and the sum is ‖p̃‖². Each entry of the expanded product is off by at most
    (d + 8)·ε·(|x| + α|μ_k|)·ω_i, so ‖p̃‖ is off by at most that times ‖ω‖: the bound subtracts
    it before squaring.
    """
    n, d = x.shape
    k, j = p.low_lam.shape
    m = a.shape[0]
    v_low = (a * a)[:, :, None] * p.low_lam[None, ...] + (b * b)[:, :, None]  # (m, k, J)
    omega = xp.sqrt(xp.clip(1 / v_low - 1 / v_max[:, :, None], min=0.0))
    if m == 1:
        rows = xp.concat([p.low_q, -a[0, 0] * xp.reshape(p.low_mu, (1, k * j))], axis=0)
        rows = rows * xp.reshape(omega, (1, k * j))
        last = xp.ones((n, 1), dtype=x.dtype, device=device(x))
        wp = xp.reshape(xp.concat([x, last], axis=1) @ rows, (n, k, j))
    else:
        wp = xp.reshape(x @ p.low_q, (n, k, j)) - a[:, :, None] * p.low_mu[None, ...]
        wp = wp * omega
    size = xp.sqrt(_sum_squares(wp, xp))  # (n, k)
    err = (d + 8) * eps * reach * xp.sqrt(xp.sum(omega * omega, axis=2))
    low = xp.clip(size - err, min=0.0)
    return low * low


def _sum_squares(a: Array, xp: Namespace) -> Array:
    """Σ over the last (short) axis of a², (n, k); einsum where NumPy has it (2× vecdot)."""
    if is_numpy(xp):
        return np.einsum("nkj,nkj->nk", a, a)
    return xp.vecdot(a, a, axis=-1)


def _slot_count(counts: np.ndarray, k: int) -> tuple[int, int]:
    """The slot count S ≤ :func:`max_slots` minimising the work, and that work (component-rows).

    ``counts`` are the components each row keeps besides its first. Rows keeping one cost 1
    (computed once for the bound), rows keeping fewer than S others cost 1 + S (padded), the
    rest k (dense).
    """
    n = counts.size
    at_most = np.cumsum(np.bincount(counts, minlength=k + 1))
    best = (2, n * k + 1)
    for s in range(2, max_slots(k) + 1):
        few = int(at_most[s - 1]) - int(at_most[0])
        work = n + s * few + k * (n - int(at_most[s - 1]))
        if work < best[1]:
            best = (s, work)
    return best


def _finite_or_zero(a: Array, xp: Namespace) -> Array:
    """Rates where finite, else 0: an infinite rate is refused for the quantities using it."""
    return xp.where(xp.isfinite(a), a, xp.zeros_like(a))
