"""Classifier-free guidance (CFG), classifier guidance and the tilted family, exactly.

Convention. For labelled data and a class y, the CFG field with guidance weight w ≥ 0 is

    u^w_t(x | y) = (1 − w) u_t(x) + w u_t(x | y),

so w = 0 is the unconditional field, w = 1 the conditional one, and w > 1 extrapolates past
it. The other common spelling uses a guidance scale ω; :func:`guidance_weight` maps it:

=============================================  ==================  ============
convention                                      field               w
=============================================  ==================  ============
``"weight"`` (this module)                      (1 − w) u + w u_y    w
``"delta"`` (u + ω (u_y − u); diffusers'        u + ω (u_y − u)      ω
``guidance_scale``, Stable Diffusion)
``"ho"`` ((1 + ω) u_y − ω u; Ho & Salimans)     (1 + ω) u_y − ω u    1 + ω
=============================================  ==================  ============

The facts this module makes computable (docs/guidance.md has the measured numbers):

- Both u and u_y satisfy the score identity u = (α̇/α) x + (α̇β²/α − ββ̇) s for α > 0 (the
  same Gaussian path), so u^w_t follows the score of the *tilted* density
  q^w_t ∝ p_t(x)^{1−w} p_t(x | y)^w: u^w = (α̇/α) x + (α̇β²/α − ββ̇) ∇log q^w_t. With the exact
  classifier, classifier guidance of scale w (score s + w ∇log p_t(y | x)) is the same field.
- At w = 1 the CFG ODE carries p_init to p_data(· | y). For w ≠ 0, 1 the family q^w_t is not
  transported by u^w_t (it does not solve the continuity equation), so the CFG ODE's output is
  *not* q^w_1; the gap is measured by :func:`cfg_gap` as KL(output ‖ q^w_1) with a standard
  error, using the exact log-density of the output through the likelihood ODE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, final

import numpy as np

from ._check import check_rng
from ._xp import Array, device, points, times, to_numpy
from .likelihood import log_likelihood
from .marginals import MarginalPath
from .samplers import sample

__all__ = [
    "CFG",
    "CFGGap",
    "ClassifierGuidance",
    "LogNormaliser",
    "Tilted",
    "cfg_gap",
    "guidance_weight",
]

Convention = Literal["weight", "delta", "ho"]


def guidance_weight(scale: float, *, convention: Convention) -> float:
    """Return this module's weight w for a guidance ``scale`` given in another ``convention``.

    ``"weight"``: w = scale; ``"delta"`` (u + ω (u_y − u)): w = ω; ``"ho"``
    ((1 + ω) u_y − ω u): w = 1 + ω. For example diffusers' ``guidance_scale = 7.5`` is w = 7.5
    and Ho & Salimans' ω = 3 is w = 4.
    """
    s = _real(scale, "scale")
    if convention in ("weight", "delta"):
        return s
    if convention == "ho":
        return 1.0 + s
    raise ValueError(f"convention must be 'weight', 'delta' or 'ho', got {convention!r}")


def _real(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    if not math.isfinite(float(v)):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return float(v)


def _weight(w: Any) -> float:
    wv = _real(w, "w")
    if wv < 0:
        raise ValueError(f"w must be >= 0 (0: unconditional, 1: conditional), got {wv}")
    return wv


def _check(marginal: Any) -> MarginalPath:
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    if marginal.data.labels is None:
        raise ValueError("marginal: guidance needs labelled data (GaussianMixture(labels=...))")
    return marginal


def _mix(uncond: Array, cond: Array, w: float) -> Array:
    """(1 − w) a + w b: the one place the guidance weight combines two quantities."""
    return (1.0 - w) * uncond + w * cond


@final
@dataclass(frozen=True, eq=False)
class CFG:
    """The CFG field u^w_t(x | y) = (1 − w) u_t(x) + w u_t(x | y) of exact fields.

    Parameters
    ----------
    marginal : MarginalPath of labelled data.
    y : a class label, or an (n,) integer array of labels (one per row of every x passed).
    w : guidance weight ≥ 0 (see :func:`guidance_weight` for the other conventions).

    Its methods take x (n, d) and t as :class:`~fmref.marginals.MarginalPath` does; pass
    ``cfg.vector_field`` to :func:`fmref.samplers.sample` or :func:`fmref.log_likelihood`
    (which then finds ``cfg.divergence``). Since the weight is linear, div u^w and ∇u^w are
    the same combination of the exact unconditional and conditional ones.
    """

    marginal: MarginalPath
    y: Any
    w: float

    def __post_init__(self) -> None:
        _check(self.marginal)
        object.__setattr__(self, "w", _weight(self.w))

    @property
    def dim(self) -> int:
        return self.marginal.dim

    def evaluate(self, x: Any, t: Any, quantities: tuple[str, ...]) -> dict[str, Array]:
        """(1 − w) q(x, t) + w q(x, t | y) for each name of MarginalPath.QUANTITIES linear in p.

        Only quantities linear in the field make sense here: ``vector_field``, ``divergence``,
        ``jacobian`` and ``score`` (the last is ∇log q^w_t, see :class:`Tilted`).
        """
        ok = ("vector_field", "divergence", "jacobian", "score")
        if isinstance(quantities, str) or not quantities or set(quantities) - set(ok):
            raise ValueError(f"quantities must be a nonempty tuple of {ok}, got {quantities!r}")
        if self.w == 0.0:
            return self.marginal.evaluate(x, t, quantities)
        cond = self.marginal.evaluate(x, t, quantities, y=self.y)
        if self.w == 1.0:
            return cond
        unc = self.marginal.evaluate(x, t, quantities)
        return {q: _mix(unc[q], cond[q], self.w) for q in quantities}

    def vector_field(self, x: Any, t: Any) -> Array:
        """u^w_t(x | y), shape (n, d)."""
        return self.evaluate(x, t, ("vector_field",))["vector_field"]

    def divergence(self, x: Any, t: Any) -> Array:
        """div u^w_t(x | y) = (1 − w) div u_t(x) + w div u_t(x | y), shape (n,)."""
        return self.evaluate(x, t, ("divergence",))["divergence"]

    def jacobian(self, x: Any, t: Any) -> Array:
        """∇u^w_t(x | y), entry [i, j] = ∂u_i/∂x_j, shape (n, d, d)."""
        return self.evaluate(x, t, ("jacobian",))["jacobian"]

    def score(self, x: Any, t: Any) -> Array:
        """The guided score (1 − w) ∇log p_t(x) + w ∇log p_t(x | y) = ∇log q^w_t(x)."""
        return self.evaluate(x, t, ("score",))["score"]


@final
@dataclass(frozen=True, eq=False)
class ClassifierGuidance:
    """Classifier guidance with the exact classifier, through the score identity.

    The guided score is s̃ = ∇log p_t(x) + scale · ∇log p_t(y | x) and the field is
    u = (α̇/α) x + (α̇β²/α − ββ̇) s̃, defined where α_t > 0. With the exact classifier it equals
    :class:`CFG` with w = scale (because ∇log p_t(y | x) = s_t(x | y) − s_t(x)); that equality
    is a check of the two routes, not of the identity itself.
    """

    marginal: MarginalPath
    y: Any
    scale: float

    def __post_init__(self) -> None:
        _check(self.marginal)
        object.__setattr__(self, "scale", _real(self.scale, "scale"))

    @property
    def dim(self) -> int:
        return self.marginal.dim

    def score(self, x: Any, t: Any) -> Array:
        """s̃ = ∇log p_t(x) + scale · ∇log p_t(y | x), shape (n, d)."""
        s = self.marginal.score(x, t)
        return s + self.scale * self.marginal.classifier_score(x, t, y=self.y)

    def vector_field(self, x: Any, t: Any) -> Array:
        """u = (α̇/α) x + (α̇β²/α − ββ̇) s̃; needs α_t > 0 (t > 0 for every schedule but VP)."""
        xs, xp = points(x, self.dim)
        tt = times(t, xs.shape[0], xp, xs.dtype, device(xs))
        sv = self.marginal.schedule(tt)
        if not bool(xp.all(sv.alpha > 0)):
            raise ValueError("t: the score identity needs α_t > 0 (t > 0)")
        a = xp.reshape(sv.alpha, (-1, 1))
        ad = xp.reshape(sv.alpha_dot, (-1, 1))
        b = xp.reshape(sv.beta, (-1, 1))
        bbd = xp.reshape(sv.beta_beta_dot, (-1, 1))
        return (ad / a) * xs + (ad * b * b / a - bbd) * self.score(xs, tt)


@final
@dataclass(frozen=True)
class LogNormaliser:
    """log Z of an unnormalised density: ``value``, its ``stderr`` (0 for quadrature) and the
    ``method`` (``"quadrature"`` or ``"importance"``) with its size ``n`` (grid points or draws)."""

    value: float
    stderr: float
    method: str
    n: int


@final
@dataclass(frozen=True)
class Tilted:
    """The tilted family q^w_t(x) = p_t(x)^{1−w} p_t(x | y)^w / Z^w_t for one class y.

    Its score is the CFG field's guided score at every t. Z^w_t is finite for w ≥ 0: for
    w ≥ 1, p_t ≥ π_y p_t(· | y) gives q̃ ≤ π_y^{1−w} p_t(· | y); for w ≤ 1 Hölder's inequality
    gives Z ≤ 1.
    """

    marginal: MarginalPath
    y: int
    w: float

    def __post_init__(self) -> None:
        _check(self.marginal)
        self.marginal.data._members(self.y, "y")
        object.__setattr__(self, "w", _weight(self.w))

    @property
    def dim(self) -> int:
        return self.marginal.dim

    def unnormalised_log_prob(self, x: Any, t: Any) -> Array:
        """log q̃ = (1 − w) log p_t(x) + w log p_t(x | y), shape (n,)."""
        c = self.marginal.log_prob(x, t, y=self.y)
        return _mix(self.marginal.log_prob(x, t), c, self.w)

    def score(self, x: Any, t: Any) -> Array:
        """∇log q^w_t = (1 − w) ∇log p_t(x) + w ∇log p_t(x | y), shape (n, d)."""
        return CFG(self.marginal, self.y, self.w).score(x, t)

    def log_normaliser(
        self,
        t: float,
        *,
        method: Literal["auto", "quadrature", "importance"] = "auto",
        n: int | None = None,
        rng: Any = 0,
        width: float = 10.0,
    ) -> LogNormaliser:
        """log Z^w_t = log ∫ p_t^{1−w} p_t(· | y)^w dx.

        ``"quadrature"`` (d ≤ 2, the ``"auto"`` choice there): a midpoint rule on a grid of
        ``n`` points per axis (default 1601 in 1-D, 801 in 2-D) over the box holding every
        component mean α μ_k ± ``width`` standard deviations of S_k; spectrally accurate for
        these smooth, Gaussian-tailed integrands once the spacing is below the narrowest
        standard deviation. ``"importance"``: Z = E_{x~p_t(·|y)}[(p_t(y | x)/π_y)^{1−w}] from
        ``n`` (default 100 000) exact draws, with the delta-method standard error of log Z;
        for w ≥ 1 the weights are bounded by π_y^{1−w}, so the variance is finite.
        """
        tv = _real(t, "t")
        if not 0.0 <= tv <= 1.0:
            raise ValueError(f"t must lie in [0, 1], got {tv}")
        if _real(width, "width") <= 0:
            raise ValueError(f"width must be > 0 standard deviations, got {width!r}")
        d = self.dim
        if method == "auto":
            method = "quadrature" if d <= 2 else "importance"
        if method == "quadrature":
            if d > 2:
                raise ValueError(f"method: quadrature is for d <= 2, got d = {d}")
            default = 1601 if d == 1 else 801
            return self._quadrature(tv, default if n is None else n, width)
        if method == "importance":
            return self._importance(tv, 100_000 if n is None else n, rng)
        raise ValueError(f"method must be 'auto', 'quadrature' or 'importance', got {method!r}")

    def log_prob(self, x: Any, t: float, *, log_normaliser: LogNormaliser | None = None) -> Array:
        """log q^w_t(x) = log q̃ − log Z (Z from :meth:`log_normaliser` when not given)."""
        lz = self.log_normaliser(t) if log_normaliser is None else log_normaliser
        return self.unnormalised_log_prob(x, t) - lz.value

    def _quadrature(self, t: float, n: Any, width: float) -> LogNormaliser:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 16:
            raise ValueError(f"n must be an int >= 16 grid points per axis, got {n!r}")
        data, sv = self.marginal.data, self.marginal.schedule(np.array([t]))
        a, b = float(sv.alpha[0]), float(sv.beta[0])
        centres = a * data.means
        sd = np.sqrt(a * a * data.eigenvalues.max(axis=1) + b * b)
        lo = (centres - width * sd[:, None]).min(axis=0)
        hi = (centres + width * sd[:, None]).max(axis=0)
        axes = [lo[i] + (np.arange(n) + 0.5) * (hi[i] - lo[i]) / n for i in range(self.dim)]
        grid = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
        cell = float(np.prod((hi - lo) / n))
        lq = np.asarray(self.unnormalised_log_prob(grid, t), dtype=np.float64)
        m = lq.max()
        value = float(m + math.log(np.exp(lq - m).sum() * cell))
        return LogNormaliser(value, 0.0, "quadrature", int(n) ** self.dim)

    def _importance(self, t: float, n: Any, rng: Any) -> LogNormaliser:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"n must be an int >= 2 draws, got {n!r}")
        cond = MarginalPath(self.marginal.data.given(self.y), self.marginal.path)
        x = cond.sample(int(n), t, rng=check_rng(rng))
        # log of the weight q̃/p_t(·|y) = (1 − w)(log p_t − log p_t(·|y)).
        lw = (1.0 - self.w) * np.asarray(
            to_numpy(self.marginal.log_prob(x, t) - self.marginal.log_prob(x, t, y=self.y))
        )
        m = lw.max()
        r = np.exp(lw - m)
        mean = r.mean()
        se = r.std(ddof=1) / math.sqrt(int(n))
        return LogNormaliser(float(m + math.log(mean)), float(se / mean), "importance", int(n))


@final
@dataclass(frozen=True)
class CFGGap:
    """How far the CFG ODE's output ρ^w is from the tilted q^w_1 (and from p_data(· | y)).

    Attributes
    ----------
    w, y : the guidance weight and class.
    x : (n, d) CFG samples X_1 (float64 NumPy), from X_0 ~ p_init through the CFG ODE.
    log_rho : (n,) exact log ρ^w(X_1) through the likelihood ODE with the exact divergence.
    log_q : (n,) log q^w_1(X_1), normalised by ``log_normaliser``.
    log_p_data : (n,) log p_data(X_1 | y).
    kl, kl_stderr : KL(ρ^w ‖ q^w_1) = E_ρ[log ρ − log q] and its standard error (plus the
        normaliser's standard error in quadrature).
    log_normaliser : the LogNormaliser of q^w_1.
    """

    w: float
    y: int
    x: np.ndarray
    log_rho: np.ndarray
    log_q: np.ndarray
    log_p_data: np.ndarray
    kl: float
    kl_stderr: float
    log_normaliser: LogNormaliser


def cfg_gap(
    marginal: MarginalPath,
    *,
    y: int,
    w: float,
    n: int = 2000,
    rng: Any = 0,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    normaliser: dict[str, Any] | None = None,
) -> CFGGap:
    """Sample the CFG ODE and measure KL(ρ^w ‖ q^w_1) with the exact log-density of its output.

    X_0 ~ N(0, I) is pushed to X_1 by ``dop853`` with ``rtol``/``atol``; log ρ^w(X_1) comes
    from :func:`fmref.log_likelihood` (backwards, the exact CFG divergence); log q^w_1 from
    :class:`Tilted` with its normaliser (``normaliser``: keyword arguments of
    :meth:`Tilted.log_normaliser`). At w = 1, ρ^w = p_data(· | y) = q^1_1 and the KL is 0 up to
    the solver's error; for w > 1 it is positive.
    """
    _check(marginal)
    ends = marginal.schedule(np.array([0.0, 1.0]))
    if ends.alpha[0] != 0 or ends.beta[0] != 1 or ends.beta[1] != 0:
        raise ValueError(
            f"marginal: cfg_gap starts at p_init = N(0, I) = p_0 and ends at p_1 = p_data, which "
            f"needs α_0 = 0, β_0 = 1 and β_1 = 0; {marginal.schedule!r} does not have them"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    field = CFG(marginal, y, w)
    tilted = Tilted(marginal, y, field.w)
    g = check_rng(rng)
    res = sample(
        field.vector_field, n, rng=g, dim=marginal.dim, method="dop853", rtol=rtol, atol=atol
    )
    x1 = np.asarray(res.x, dtype=np.float64)
    lik = log_likelihood(field.vector_field, x1, method="dop853", rtol=rtol, atol=atol)
    log_rho = np.asarray(lik.log_prob, dtype=np.float64)
    lz = tilted.log_normaliser(1.0, **(normaliser or {}))
    log_q = np.asarray(tilted.log_prob(x1, 1.0, log_normaliser=lz), dtype=np.float64)
    log_pd = np.asarray(marginal.data.given(y).log_prob(x1), dtype=np.float64)
    diff = log_rho - log_q
    se = math.hypot(float(diff.std(ddof=1) / math.sqrt(diff.shape[0])), lz.stderr)
    return CFGGap(field.w, int(y), x1, log_rho, log_q, log_pd, float(diff.mean()), se, lz)
