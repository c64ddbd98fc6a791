"""p_data: Gaussian mixtures Σ_k π_k N(μ_k, Σ_k), Dirac mixtures, and named data sets."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, final

import numpy as np

from . import _gmm, _prune
from ._check import MISSING, check_float, check_int, check_rng, positional_rng
from ._xp import Array, device, eager, from_numpy, is_numpy, namespace, points, to_numpy

__all__ = [
    "GaussianMixture",
    "eight_gaussians",
    "eight_gaussians_classes",
    "random_2d",
    "random_mixture",
    "rng_from",
]

CovKind = Literal["isotropic", "diagonal", "full", "dirac"]

#: Diagonal mixtures of at most this dimension rotate through GEMMs with Q_k = I.
_GEMM_SUM_MAX_D = 8

#: Largest covariance entry accepted: squares and products with α̇ stay far from overflow.
COV_MAX = 1e150

#: |Σ π_k − 1| allowed before the weights are refused; accepted weights are renormalised.
WEIGHT_ATOL = 1e-6


#: Deprecated home of :func:`fmref._check.check_rng`, kept importable for one release.
rng_from = check_rng


def _real(a: Any, name: str) -> np.ndarray:
    arr = to_numpy(a)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _eig(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of each symmetric Σ_k in c, shape (k, d, d).

    A positive-definite Σ_k = L Lᵀ is factored through the SVD of its Cholesky factor,
    L = U diag(s) Vᵀ, so Σ_k = U diag(s²) Uᵀ: a small eigenvalue then carries a relative error
    ≈ ε·√cond instead of eigh's ε·cond, and quadratic forms are as accurate as a Cholesky
    solve (10× closer to a 50-digit oracle than eigh at cond 1e12). Semidefinite Σ_k, which
    have no Cholesky factor, use eigh.
    """
    lam = np.empty(c.shape[:2])
    q = np.empty_like(c)
    for j, cj in enumerate(c):
        try:
            u, s, _ = np.linalg.svd(np.linalg.cholesky(cj))
            lam[j], q[j] = (s * s)[::-1], u[:, ::-1]
        except np.linalg.LinAlgError:
            lam[j], q[j] = np.linalg.eigh(cj)
    return lam, q


@final
class GaussianMixture:
    """p_data(z) = Σ_k π_k N(z; μ_k, Σ_k).

    Parameters
    ----------
    weights : (k,) nonnegative, summing to 1 within 1e-6 (then renormalised exactly).
    means : (k, d).
    covs : (k,) isotropic variances, (k, d) diagonal variances or (k, d, d) full covariances;
        symmetric (relative tolerance 1e-8) and positive semidefinite (eigenvalues ≥ −1e-10 times
        the largest, clipped to 0). All-zero covariances give a Dirac mixture.
    labels : optional (k,) integer class label y of each component (labelled data). Then
        p_data(z | y) = Σ_{k: y_k = y} (π_k / π_y) N(z; μ_k, Σ_k) with π_y = Σ_{k: y_k = y} π_k;
        see :meth:`given`, :attr:`classes`, :meth:`class_weights`.

    Parameters are stored in float64 NumPy and each Σ_k is eigendecomposed once here; they are
    moved to another namespace, device or dtype once and cached (:meth:`params`).
    """

    def __init__(self, weights: Any, means: Any, covs: Any, *, labels: Any = None) -> None:
        w = _real(weights, "weights")
        mu = _real(means, "means")
        c = _real(covs, "covs")
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (k, d) with k, d >= 1, got {mu.shape}")
        k, d = mu.shape
        if w.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match means, got {w.shape}")
        if np.any(w < 0):
            raise ValueError("weights must be nonnegative")
        if abs(w.sum() - 1.0) > WEIGHT_ATOL:
            raise ValueError(f"weights must sum to 1 (within {WEIGHT_ATOL}), got {w.sum()!r}")
        self._weights = w / w.sum()
        self._means = mu
        if np.max(np.abs(c), initial=0.0) > COV_MAX:
            raise ValueError(
                f"covs must have entries of magnitude at most {COV_MAX:g} (beyond it α²Σ_k, "
                "αα̇Σ_k and the eigendecomposition overflow float64)"
            )
        if c.shape == (k,):
            if np.any(c < 0):
                raise ValueError("covs (isotropic variances) must be nonnegative")
            lam, q, kind = np.repeat(c[:, None], d, axis=1), None, "isotropic"
        elif c.shape == (k, d):
            if np.any(c < 0):
                raise ValueError("covs (diagonal variances) must be nonnegative")
            lam, q, kind = c.copy(), None, "diagonal"
        elif c.shape == (k, d, d):
            scale = max(np.abs(c).max(), 1e-300)
            if not np.allclose(c, np.swapaxes(c, 1, 2), rtol=1e-8, atol=1e-8 * scale):
                raise ValueError("covs must be symmetric (k, d, d) matrices")
            c = 0.5 * c + 0.5 * np.swapaxes(c, 1, 2)
            lam, q = _eig(c)
            if np.any(lam < -1e-10 * scale):
                raise ValueError("covs must be positive semidefinite")
            # eigh returns ~1e-17 instead of 0 for a rank-deficient Σ_k; snapping eigenvalues at
            # rounding level to exactly 0 keeps such data flagged singular (refused at t = 1).
            tiny = d * np.finfo(np.float64).eps * np.max(np.abs(lam), axis=1, keepdims=True)
            lam = np.where(lam <= tiny, 0.0, lam)
            kind = "full"
        else:
            raise ValueError(
                f"covs must have shape ({k},), ({k}, {d}) or ({k}, {d}, {d}), got {c.shape}"
            )
        self._covs = c
        self._lam = lam
        self._q = q
        self.kind: CovKind = "dirac" if not np.any(lam) else kind  # type: ignore[assignment]
        self._cache: dict[tuple[str, str, str], _gmm.Params] = {}
        self._labels = None if labels is None else _labels(labels, k)

    # -- construction helpers -------------------------------------------------------------
    @classmethod
    def empirical(cls, points_: Any, weights: Any = None) -> GaussianMixture:
        """Dirac mixture (1/N) Σ_i δ_{x_i}: the memorizing optimum of a finite data set."""
        pts = _real(points_, "points")
        if pts.ndim != 2 or pts.shape[0] < 1:
            raise ValueError(f"points must have shape (N, d) with N >= 1, got {pts.shape}")
        n = pts.shape[0]
        w = np.full(n, 1.0 / n) if weights is None else weights
        return cls(w, pts, np.zeros(n))

    @classmethod
    def gaussian(cls, mean: Any, cov: Any) -> GaussianMixture:
        """A single Gaussian N(μ, Σ) (k = 1); ``cov`` a scalar, (d,) or (d, d)."""
        mu = _real(mean, "mean").reshape(1, -1)
        c = _real(cov, "cov")
        return cls(np.ones(1), mu, c[None, ...] if c.ndim else c.reshape(1))

    # -- read-only views ------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        return self._weights.copy()

    @property
    def means(self) -> np.ndarray:
        return self._means.copy()

    @property
    def covs(self) -> np.ndarray:
        return self._covs.copy()

    @property
    def eigenvalues(self) -> np.ndarray:
        """λ_k of each Σ_k, shape (k, d)."""
        return self._lam.copy()

    @property
    def dim(self) -> int:
        return int(self._means.shape[1])

    @property
    def n_components(self) -> int:
        return int(self._means.shape[0])

    def full_covs(self) -> np.ndarray:
        """Σ_k as (k, d, d) matrices."""
        if self._q is None:
            return np.einsum("kd,de->kde", self._lam, np.eye(self.dim))
        return np.einsum("kij,kj,klj->kil", self._q, self._lam, self._q)

    def mean(self) -> np.ndarray:
        """E[z] under p_data, shape (d,)."""
        return self._weights @ self._means

    def covariance(self) -> np.ndarray:
        """Cov[z] under p_data, shape (d, d)."""
        m = self.mean()
        dm = self._means - m
        return np.einsum("k,kij->ij", self._weights, self.full_covs()) + np.einsum(
            "k,ki,kj->ij", self._weights, dm, dm
        )

    def params(self, xp: Any, dev: Any, dtype: Any) -> _gmm.Params:
        """Parameters in namespace ``xp`` on ``dev`` with ``dtype``, moved once and cached."""
        key = (getattr(xp, "__name__", str(xp)), str(dev), str(dtype))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        k, d = self._means.shape
        with np.errstate(divide="ignore"):
            logw = np.log(self._weights)
        mu_rot = self._means if self._q is None else np.einsum("kij,ki->kj", self._q, self._means)
        if self._q is not None:
            qcat = np.transpose(self._q, (1, 0, 2)).reshape(d, k * d)
        elif d <= _GEMM_SUM_MAX_D:
            # Summing (n, k, d) over k is slow for small d; a GEMM against stacked identities
            # does the same sum at BLAS speed for 2·n·k·d² extra flops.
            qcat = np.tile(np.eye(d), (1, k))
        else:
            qcat = None
        big = max(np.abs(self._means).max(), self._lam.max())
        if big > float(xp.finfo(dtype).max) / 4:
            raise ValueError(
                f"x has dtype {dtype}, too narrow for this mixture (means or variances up to "
                f"{big:g}): pass float64 points"
            )
        conv = lambda a: None if a is None else from_numpy(a, xp, dev, dtype)  # noqa: E731
        # eager: the cached parameters are concrete arrays even when built inside jax.jit
        with eager(xp):
            means = conv(self._means)
            with np.errstate(over="ignore", invalid="ignore"):
                mu_hi, mu_lo = _gmm.split(means, xp)
            low_q, low_lam, low_mu = (
                conv(a) for a in _prune.directions(self._lam, self._q, self._means)
            )
            p = _gmm.Params(
                log_weights=conv(logw),
                means=means,
                mu_hi=mu_hi,
                mu_lo=mu_lo,
                mu_rot=conv(mu_rot),
                lam=conv(self._lam),
                q=conv(self._q),
                qcat=conv(qcat),
                qcat_t=conv(None if qcat is None else np.ascontiguousarray(qcat.T)),
                low_q=low_q,
                low_lam=low_lam,
                low_mu=low_mu,
            )
        self._cache[key] = p
        return p

    # -- sampling and density -------------------------------------------------------------
    def sample(
        self,
        n: int,
        *args: Any,
        rng: Any = MISSING,
        like: Any = None,
        return_components: bool = False,
    ) -> Any:
        """Draw n points z ~ p_data, float64 NumPy (or the namespace/dtype of ``like``).

        ``rng`` (keyword-only; positional is deprecated) is a Generator or an int seed. With
        ``return_components`` also return the component index of each point, shape (n,).
        """
        n = check_int(n, "n", low=0)
        g = positional_rng(args, rng, "GaussianMixture.sample")
        comp = g.choice(self.n_components, size=n, p=self._weights)
        xi = g.standard_normal((n, self.dim))
        scaled = np.sqrt(self._lam[comp]) * xi
        if self._q is not None:
            scaled = np.einsum("nij,nj->ni", self._q[comp], scaled)
        z = self._means[comp] + scaled
        if like is not None:
            z = _like(z, like)
        return (z, comp) if return_components else z

    def _terms(self, x: Any) -> _gmm.Terms:
        if self.kind == "dirac" or np.any(self._lam == 0):
            raise ValueError(
                "this mixture has singular covariances (Dirac or degenerate): p_data has no "
                "density; evaluate MarginalPath at t < 1 instead"
            )
        x, xp = points(x, self.dim)
        p = self.params(xp, device(x), x.dtype)
        one = xp.ones((x.shape[0],), dtype=x.dtype, device=device(x))
        return _gmm.compute(p, x, one, 0 * one, xp)

    def log_prob(self, x: Any) -> Array:
        """log p_data(x), shape (n,)."""
        return self._terms(x).log_prob

    def score(self, x: Any) -> Array:
        """∇ log p_data(x), shape (n, d)."""
        return _gmm.score(self._terms(x))

    def responsibilities(self, x: Any) -> Array:
        """Posterior component probabilities P(k | x) under p_data, shape (n, k)."""
        return self._terms(x).gamma

    # -- labelled data --------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray | None:
        """Class label y_k of each component, int64 shape (k,), or None for unlabelled data."""
        return None if self._labels is None else self._labels.copy()

    @property
    def classes(self) -> np.ndarray:
        """The distinct labels in increasing order (a ValueError for unlabelled data)."""
        return np.unique(self._need_labels())

    def class_weights(self) -> np.ndarray:
        """π_y = Σ_{k: y_k = y} π_k for each label of :attr:`classes`, shape (n_classes,)."""
        lab = self._need_labels()
        return np.array([self._weights[lab == c].sum() for c in np.unique(lab)])

    def given(self, y: Any) -> GaussianMixture:
        """p_data(· | y): the components labelled y, weights π_k / π_y renormalised.

        ``y`` is one label (a Python or NumPy integer) of :attr:`classes`; the result keeps the
        labels (all equal to y) and the covariance kind of each kept component.
        """
        mask = self._members(y, "y")
        w = self._weights[mask]
        return GaussianMixture(
            w / w.sum(), self._means[mask], self._covs[mask], labels=self._need_labels()[mask]
        )

    def _need_labels(self) -> np.ndarray:
        if self._labels is None:
            raise ValueError("this mixture has no labels: build it with labels=(k,) ints")
        return self._labels

    def _members(self, y: Any, name: str) -> np.ndarray:
        """Boolean (k,) mask of the components labelled y (y a single known label)."""
        lab = self._need_labels()
        if isinstance(y, bool) or not isinstance(y, (int, np.integer)):
            raise TypeError(f"{name} must be an int label, got {y!r}")
        mask = lab == int(y)
        if not mask.any() or self._weights[mask].sum() == 0:
            raise ValueError(
                f"{name} = {int(y)} is not a class of positive weight; classes are "
                f"{np.unique(lab).tolist()}"
            )
        return mask

    def __repr__(self) -> str:
        """The constructor call that rebuilds a small mixture (≤ 64 numbers); elided otherwise.

        ``eval(repr(m))`` gives an equal mixture for small ones (floats print exactly), so a
        failing test's message can be pasted to rebuild its example.
        """
        size = self._weights.size + self._means.size + self._covs.size
        if size <= _REPR_NUMBERS:
            labels = "" if self._labels is None else f", labels={self._labels.tolist()}"
            return (
                f"GaussianMixture({self._weights.tolist()}, {self._means.tolist()}, "
                f"{self._covs.tolist()}{labels})"
            )
        extra = "" if self._labels is None else f", classes={self.classes.tolist()}"
        return f"GaussianMixture(k={self.n_components}, d={self.dim}, kind={self.kind!r}{extra})"


#: Largest mixture (weights, means and covariances, in numbers) whose repr rebuilds it.
_REPR_NUMBERS = 64


def _labels(labels: Any, k: int) -> np.ndarray:
    arr = to_numpy(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    if arr.shape != (k,):
        raise ValueError(f"labels must have shape ({k},), one per component, got {arr.shape}")
    return np.asarray(arr, dtype=np.int64).copy()


def _like(a: np.ndarray, like: Any) -> Array:
    xp = namespace(like)
    if is_numpy(xp):
        return np.asarray(a, dtype=like.dtype)
    return from_numpy(a, xp, device(like), like.dtype)


def eight_gaussians(radius: float = 5.0, variance: float = math.sqrt(0.1)) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians on a circle: μ_k = r (cos 2πk/8, sin 2πk/8).

    The defaults reproduce torchcfm's ``sample_8gaussians``: ``eight_normal_sample(n, 2, scale=5,
    var=0.1)`` builds ``MultivariateNormal(0, sqrt(var) * I)``, whose *covariance* is √0.1·I
    ≈ 0.316·I (standard deviation ≈ 0.562), not 0.1·I.
    """
    radius = check_float(radius, "radius")
    variance = check_float(variance, "variance", low=0.0)
    ang = 2 * np.pi * np.arange(8) / 8
    means = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    return GaussianMixture(np.full(8, 1 / 8), means, np.full(8, float(variance)))


#: Relative weights of the eight modes of :func:`eight_gaussians_classes`, by angle index.
_EIGHT_CLASS_WEIGHTS = (4.0, 4.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0)


def eight_gaussians_classes(
    n_classes: int = 2, radius: float = 5.0, variance: float = math.sqrt(0.1)
) -> GaussianMixture:
    """Eight Gaussians on a circle with class labels y_k = k mod n_classes and unequal weights.

    Mode k sits at r (cos 2πk/8, sin 2πk/8) with variance ``variance`` (as
    :func:`eight_gaussians`) and weight π_k ∝ (4, 4, 3, 3, 2, 2, 1, 1)_k, so each class's
    modes have unequal weights (two classes: alternate modes, weights 4:3:2:1 within each;
    four classes: opposite modes k and k + 4, weights 2:1 or 3:1). ``n_classes`` divides 8.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise TypeError(f"n_classes must be an int, got {n_classes!r}")
    if n_classes not in (1, 2, 4, 8):
        raise ValueError(f"n_classes must be 1, 2, 4 or 8 (a divisor of 8), got {n_classes}")
    base = eight_gaussians(radius, variance)
    w = np.asarray(_EIGHT_CLASS_WEIGHTS)
    return GaussianMixture(w / w.sum(), base.means, base.covs, labels=np.arange(8) % int(n_classes))


def random_2d(
    nmodes: int = 5, std: float = 1.0, scale: float = 10.0, seed: int = 0
) -> GaussianMixture:
    """A random 2-D mixture like the course lab's ``GaussianMixture.random_2D``.

    Means uniform on [−scale/2, scale/2]², covariances std²·I, equal weights. The lab draws its
    means with torch's generator; this uses ``numpy.random.default_rng(seed)``, so the same seed
    gives other means.
    """
    nmodes = check_int(nmodes, "nmodes", low=1)
    std = check_float(std, "std", low=0.0, low_open=True)
    scale = check_float(scale, "scale", low=0.0, low_open=True)
    g = check_rng(seed, "seed")
    means = (g.random((nmodes, 2)) - 0.5) * scale
    return GaussianMixture(np.full(nmodes, 1 / nmodes), means, np.full(nmodes, std**2))


def random_mixture(
    k: int,
    d: int,
    covariance: str = "full",
    *,
    rng: Any = 0,
    mean_scale: float = 1.5,
    var_range: tuple[float, float] = (0.2, 1.5),
    ridge: float | None = None,
    dirichlet_weights: bool = False,
) -> GaussianMixture:
    """A random k-component mixture in d dimensions of the requested covariance kind.

    Drawn in this order from ``rng``: means = mean_scale · N(0, I); then covariances: full
    Σ_k = A_k A_kᵀ/d + ridge·I (A_k standard normal, ``ridge`` defaulting to var_range[0]),
    diagonal or isotropic variances uniform on ``var_range``, all zeros for "dirac"; then the
    weights, Dirichlet(1, …, 1) if ``dirichlet_weights`` else equal. For tests and benchmarks
    that want a fixed, well-conditioned mixture without hypothesis.
    """
    k = check_int(k, "k", low=1)
    d = check_int(d, "d", low=1)
    mean_scale = check_float(mean_scale, "mean_scale", low=0.0)
    lo = check_float(var_range[0], "var_range[0]", low=0.0, low_open=True)
    hi = check_float(var_range[1], "var_range[1]", low=lo)
    if ridge is not None:
        ridge = check_float(ridge, "ridge", low=0.0)
    g = check_rng(rng)
    means = mean_scale * g.standard_normal((k, d))
    if covariance == "full":
        a = g.standard_normal((k, d, d))
        covs = a @ np.swapaxes(a, 1, 2) / d + (lo if ridge is None else ridge) * np.eye(d)
    elif covariance == "diagonal":
        covs = g.uniform(lo, hi, (k, d))
    elif covariance == "isotropic":
        covs = g.uniform(lo, hi, k)
    elif covariance == "dirac":
        covs = np.zeros(k)
    else:
        raise ValueError(
            f"covariance must be 'full', 'diagonal', 'isotropic' or 'dirac', got {covariance!r}"
        )
    weights = g.dirichlet(np.ones(k)) if dirichlet_weights else np.full(k, 1 / k)
    return GaussianMixture(weights, means, covs)


#: Named data sets for the CLI, each built with its documented defaults.
DATASETS: dict[str, Callable[[], GaussianMixture]] = {
    "eight_gaussians": eight_gaussians,
    "eight_gaussians_classes": eight_gaussians_classes,
    "random_2d": random_2d,
}
