"""Check fmref on a device: the correctness half of ``benchmarks/gpu_check.py``.

Every check is a function ``check_*(xp, device, dtype)`` of any array namespace (CuPy or
torch.cuda on a GPU; NumPy and array_api_strict in the tests): it compares fmref there with
NumPy float64 on the same points and returns :class:`Check` rows (error against tolerance)
rather than raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fmref._xp import from_numpy, to_numpy
from fmref.continuity import identity_residual
from fmref.marginals import QUANTITIES, MarginalPath
from fmref.mixtures import GaussianMixture, random_mixture
from fmref.schedules import Cosine, Linear, Schedule

#: Max error relative to the quantity's scale, max|err| / (max|ref| + 1), per dtype.
TOL = {"float64": 1e-10, "float32": 5e-4}
#: Continuity residual relative to |∂_t log p| + |div u| + |u·s| + 1.
TOL_CONTINUITY = {"float64": 1e-10, "float32": 5e-4}


@dataclass(frozen=True)
class Check:
    name: str
    dtype: str
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.error) and self.error <= self.tol)


def mixture(kind: str, k: int, d: int, seed: int = 0) -> GaussianMixture:
    """A fixed random mixture of the given covariance kind."""
    return random_mixture(k, d, kind, rng=seed, dirichlet_weights=True)


def dtype_name(dtype: Any) -> str:
    return "float32" if "32" in str(dtype) else "float64"


def device_inputs(xp: Any, device: Any, dtype: Any, n: int, d: int, seed: int) -> tuple[Any, ...]:
    """Points and per-row times on the device, and the same values as float64 NumPy."""
    g = np.random.default_rng(seed)
    x = from_numpy(1.5 * g.standard_normal((n, d)), xp, device, dtype)
    t = from_numpy(g.uniform(0.05, 0.95, n), xp, device, dtype)
    return x, t, to_numpy(x).astype(np.float64), to_numpy(t).astype(np.float64)


def rel_error(got: Any, ref: np.ndarray) -> float:
    g = to_numpy(got).astype(np.float64)
    if g.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(g - ref), initial=0.0) / (np.max(np.abs(ref), initial=0.0) + 1.0))


def _placement(got: Any, like: Any) -> bool:
    import array_api_compat as c

    return bool(
        c.array_namespace(got) is c.array_namespace(like)
        and got.dtype == like.dtype
        and str(c.device(got)) == str(c.device(like))
    )


def check_exact(xp: Any, device: Any, dtype: Any, *, n: int = 256) -> list[Check]:
    """Every quantity on (xp, device, dtype) vs NumPy float64 on the same points."""
    name = dtype_name(dtype)
    out = []
    for kind, k, d in (("full", 16, 8), ("diagonal", 8, 5), ("isotropic", 6, 3), ("dirac", 12, 2)):
        mp = MarginalPath(mixture(kind, k, d), Cosine())
        x, t, x64, t64 = device_inputs(xp, device, dtype, n, d, seed=k)
        got = mp.evaluate(x, t, QUANTITIES)
        ref = mp.evaluate(x64, t64, QUANTITIES)
        placed = all(_placement(got[q], x) for q in QUANTITIES)
        out.append(
            Check(f"{kind}: results on device, dtype kept", name, 0.0 if placed else 1.0, 0.0)
        )
        for q in QUANTITIES:
            out.append(
                Check(f"{kind}: {q} vs NumPy f64", name, rel_error(got[q], ref[q]), TOL[name])
            )
    return out


def check_continuity(xp: Any, device: Any, dtype: Any, *, n: int = 256) -> list[Check]:
    """The continuity identity on the device (device bookkeeping: zero by construction on CPU)."""
    name = dtype_name(dtype)
    out = []
    for kind, k, d in (("full", 16, 8), ("isotropic", 6, 3)):
        mp = MarginalPath(mixture(kind, k, d), Linear())
        x, t, _, _ = device_inputs(xp, device, dtype, n, d, seed=3)
        r = to_numpy(identity_residual(mp, x, t)).astype(np.float64)
        terms = mp.evaluate(x, t, ("dlog_prob_dt", "divergence", "vector_field", "score"))
        tn = {q: to_numpy(v).astype(np.float64) for q, v in terms.items()}
        scale = (
            np.abs(tn["dlog_prob_dt"])
            + np.abs(tn["divergence"])
            + np.abs(np.sum(tn["vector_field"] * tn["score"], axis=1))
            + 1.0
        )
        err = float(np.max(np.abs(r) / scale))
        out.append(Check(f"{kind}: continuity residual", name, err, TOL_CONTINUITY[name]))
    return out


def check_identities(xp: Any, device: Any, dtype: Any, *, n: int = 256) -> list[Check]:
    """u = (α̇/α)x + (α̇β²/α − ββ̇)s, ε̂ = (x − αx̂)/β and s = −ε̂/β, all on the device."""
    name = dtype_name(dtype)
    sched: Schedule = Cosine()
    mp = MarginalPath(mixture("full", 16, 8), sched)
    x, t, _, _ = device_inputs(xp, device, dtype, n, 8, seed=5)
    r = mp.evaluate(x, t, ("vector_field", "score", "posterior_mean", "noise_posterior_mean"))
    sv = sched(t)
    a, b = sv.alpha[:, None], sv.beta[:, None]
    ad, bbd = sv.alpha_dot[:, None], sv.beta_beta_dot[:, None]
    u_id = (ad / a) * x + (ad * b * b / a - bbd) * r["score"]
    ref = {q: to_numpy(v).astype(np.float64) for q, v in r.items()}
    return [
        Check("u = (α̇/α)x + (α̇β²/α − ββ̇)s", name, rel_error(u_id, ref["vector_field"]), TOL[name]),
        Check(
            "ε̂ = (x − α x̂)/β",
            name,
            rel_error((x - a * r["posterior_mean"]) / b, ref["noise_posterior_mean"]),
            TOL[name],
        ),
        Check("s = −ε̂/β", name, rel_error(-r["noise_posterior_mean"] / b, ref["score"]), TOL[name]),
    ]


def check_pruned(xp: Any, device: Any, dtype: Any, *, n: int = 1500) -> list[Check]:
    """The pruned kernel on the device (exact samples at t = 0.7: most components dropped,
    the compact layout's gathers and per-component GEMMs) vs prune=False on NumPy float64."""
    name = dtype_name(dtype)
    data = random_mixture(32, 24, "full", rng=1, mean_scale=6.0, var_range=(0.5, 2.0))
    x64 = MarginalPath(data, Linear()).sample(n, 0.7, rng=2)
    got = MarginalPath(data, Linear()).evaluate(from_numpy(x64, xp, device, dtype), 0.7, QUANTITIES)
    ref = MarginalPath(data, Linear(), prune=False).evaluate(x64, 0.7, QUANTITIES)
    return [
        Check(f"pruned: {q} vs unpruned NumPy f64", name, rel_error(got[q], ref[q]), TOL[name])
        for q in QUANTITIES
    ]


def run_checks(xp: Any, device: Any, dtypes: list[Any]) -> list[Check]:
    out: list[Check] = []
    for dt in dtypes:
        for fn in (check_exact, check_continuity, check_identities, check_pruned):
            out += fn(xp, device, dt)
    return out
