"""Check and benchmark fmref on a GPU in one short command (under two minutes).

    python benchmarks/gpu_check.py [--allow-missing] [--quick] [--backend cupy|torch] [--json F]

With CuPy and a CUDA device (or ``--backend torch`` with ``torch.cuda``) it

1. checks every exact quantity on the GPU against NumPy float64 on the same points (float64
   and float32, isotropic/diagonal/full/Dirac mixtures), that results stay on the device in the
   input's dtype, the continuity residual ∂_t log p + div u + u·∇log p ≈ 0, and the identities
   u = (α̇/α) x + (α̇β²/α − ββ̇) s, ε̂ = (x − α x̂)/β, s = −ε̂/β;
2. measures points/s of vector_field + score + log_prob for n = 10⁵ and 10⁶, d ∈ {2, 64},
   k = 64 full covariances, float32 and float64 (device synchronised around each timing),
   beside the GPU's own GEMM rate (matmul of 4096² matrices) in the same dtype.

It prints a table and exits 1 if any check fails. Without CuPy/GPU it exits 2 with a message
(0 with ``--allow-missing``). Every check is a function ``check_*(xp, device, dtype)`` of any
array namespace, so the same code is tested on NumPy and array_api_strict without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmref._checkpoint import atomic_write
from fmref._xp import from_numpy, to_numpy
from fmref.continuity import residual
from fmref.marginals import QUANTITIES, MarginalPath
from fmref.mixtures import GaussianMixture
from fmref.schedules import Cosine, Linear, Schedule

#: Max error relative to the quantity's scale, max|err| / (max|ref| + 1), per dtype.
TOL = {"float64": 1e-10, "float32": 5e-4}
#: Continuity residual relative to |∂_t log p| + |div u| + |u·s| + 1.
TOL_CONTINUITY = {"float64": 1e-10, "float32": 5e-4}
BENCH_QUANTITIES = ("vector_field", "score", "log_prob")


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
    g = np.random.default_rng(seed)
    means = 1.5 * g.standard_normal((k, d))
    if kind == "full":
        a = g.standard_normal((k, d, d))
        covs = a @ np.swapaxes(a, 1, 2) / d + 0.2 * np.eye(d)
    elif kind == "diagonal":
        covs = g.uniform(0.2, 1.5, (k, d))
    elif kind == "isotropic":
        covs = g.uniform(0.2, 1.5, k)
    elif kind == "dirac":
        covs = np.zeros(k)
    else:
        raise ValueError(f"kind must be full/diagonal/isotropic/dirac, got {kind!r}")
    return GaussianMixture(g.dirichlet(np.ones(k)), means, covs)


def _dtype_name(dtype: Any) -> str:
    return "float32" if "32" in str(dtype) else "float64"


def _inputs(xp: Any, device: Any, dtype: Any, n: int, d: int, seed: int) -> tuple[Any, ...]:
    """Points and per-row times on the device, and the same values as float64 NumPy."""
    g = np.random.default_rng(seed)
    x = from_numpy(1.5 * g.standard_normal((n, d)), xp, device, dtype)
    t = from_numpy(g.uniform(0.05, 0.95, n), xp, device, dtype)
    return x, t, to_numpy(x).astype(np.float64), to_numpy(t).astype(np.float64)


def _rel(got: Any, ref: np.ndarray) -> float:
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
    name = _dtype_name(dtype)
    out = []
    for kind, k, d in (("full", 16, 8), ("diagonal", 8, 5), ("isotropic", 6, 3), ("dirac", 12, 2)):
        mp = MarginalPath(mixture(kind, k, d), Cosine())
        x, t, x64, t64 = _inputs(xp, device, dtype, n, d, seed=k)
        got = mp.evaluate(x, t, QUANTITIES)
        ref = mp.evaluate(x64, t64, QUANTITIES)
        placed = all(_placement(got[q], x) for q in QUANTITIES)
        out.append(
            Check(f"{kind}: results on device, dtype kept", name, 0.0 if placed else 1.0, 0.0)
        )
        for q in QUANTITIES:
            out.append(Check(f"{kind}: {q} vs NumPy f64", name, _rel(got[q], ref[q]), TOL[name]))
    return out


def check_continuity(xp: Any, device: Any, dtype: Any, *, n: int = 256) -> list[Check]:
    """∂_t log p + div u + u·∇log p = 0 at the exact field, relative to the terms' size."""
    name = _dtype_name(dtype)
    out = []
    for kind, k, d in (("full", 16, 8), ("isotropic", 6, 3)):
        mp = MarginalPath(mixture(kind, k, d), Linear())
        x, t, _, _ = _inputs(xp, device, dtype, n, d, seed=3)
        r = to_numpy(residual(mp, x, t)).astype(np.float64)
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
    name = _dtype_name(dtype)
    sched: Schedule = Cosine()
    mp = MarginalPath(mixture("full", 16, 8), sched)
    x, t, _, _ = _inputs(xp, device, dtype, n, 8, seed=5)
    r = mp.evaluate(x, t, ("vector_field", "score", "x_hat", "eps_hat"))
    sv = sched(t)
    a, b = sv.alpha[:, None], sv.beta[:, None]
    ad, bbd = sv.alpha_dot[:, None], sv.beta_beta_dot[:, None]
    u_id = (ad / a) * x + (ad * b * b / a - bbd) * r["score"]
    ref = {q: to_numpy(v).astype(np.float64) for q, v in r.items()}
    return [
        Check("u = (α̇/α)x + (α̇β²/α − ββ̇)s", name, _rel(u_id, ref["vector_field"]), TOL[name]),
        Check("ε̂ = (x − α x̂)/β", name, _rel((x - a * r["x_hat"]) / b, ref["eps_hat"]), TOL[name]),
        Check("s = −ε̂/β", name, _rel(-r["eps_hat"] / b, ref["score"]), TOL[name]),
    ]


def run_checks(xp: Any, device: Any, dtypes: list[Any]) -> list[Check]:
    out: list[Check] = []
    for dt in dtypes:
        for fn in (check_exact, check_continuity, check_identities):
            out += fn(xp, device, dt)
    return out


def _best(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_rate(
    xp: Any, device: Any, dtype: Any, sync: Callable[[], None], size: int = 4096
) -> float:
    """Flop/s of one size × size matmul in ``dtype`` on the device (best of 5)."""
    g = np.random.default_rng(0)
    a = from_numpy(g.standard_normal((size, size)), xp, device, dtype)
    b = from_numpy(g.standard_normal((size, size)), xp, device, dtype)
    return 2.0 * size**3 / _best(lambda: a @ b, sync, repeat=5)


def bench(
    xp: Any,
    device: Any,
    dtypes: list[Any],
    sync: Callable[[], None],
    *,
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    dims: tuple[int, ...] = (2, 64),
    k: int = 64,
    budget: int = 8 * 2**30,
    gemm_size: int = 4096,
    repeat: int = 3,
) -> list[dict[str, Any]]:
    """points/s of vector_field + score + log_prob, k full components, beside the GEMM rate."""
    rows = []
    for dt in dtypes:
        rate = gemm_rate(xp, device, dt, sync, gemm_size)
        for d in dims:
            mp = MarginalPath(mixture("full", k, d), Linear(), memory_budget=budget)
            for n in sizes:
                x, _, _, _ = _inputs(xp, device, dt, n, d, seed=n % 97)
                sec = _best(partial(mp.evaluate, x, 0.5, BENCH_QUANTITIES), sync, repeat)
                flops = 6.0 * n * k * d * d  # one rotation in, two back (the GEMMs)
                rows.append(
                    {
                        "bench": "gpu_marginal",
                        "dtype": _dtype_name(dt),
                        "n": n,
                        "d": d,
                        "k": k,
                        "seconds": sec,
                        "points_per_s": n / sec,
                        "gemm_gflops_achieved": flops / sec / 1e9,
                        "gemm_gflops_device": rate / 1e9,
                        "gemm_fraction": flops / sec / rate,
                    }
                )
                del x
    return rows


def _cupy() -> tuple[Any, Any, Callable[[], None], str] | str:
    try:
        import cupy as cp
    except ImportError as exc:
        return f"CuPy is not installed ({exc}); pip install 'fmref[gpu]' on a CUDA machine"
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDA errors without a driver
        return f"CuPy found no usable CUDA driver/device: {exc}"
    if count < 1:
        return "CuPy found no CUDA device"
    import array_api_compat

    dev = cp.cuda.Device(0)
    xp = array_api_compat.array_namespace(cp.empty(0))
    props = cp.cuda.runtime.getDeviceProperties(0)
    label = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return xp, dev, lambda: cp.cuda.Device().synchronize(), f"CuPy {cp.__version__} on {label}"


def _torch_cuda() -> tuple[Any, Any, Callable[[], None], str] | str:
    try:
        import torch
    except ImportError as exc:
        return f"torch is not installed ({exc})"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    from array_api_compat import torch as xpt

    dev = torch.device("cuda:0")
    return (
        xpt,
        dev,
        torch.cuda.synchronize,
        f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}",
    )


def _table(checks: list[Check], rows: list[dict[str, Any]]) -> str:
    lines = [f"{'check':<46} {'dtype':<8} {'error':>10} {'tol':>9}  result"]
    for c in checks:
        lines.append(
            f"{c.name:<46} {c.dtype:<8} {c.error:>10.2e} {c.tol:>9.1e}  {'ok' if c.ok else 'FAIL'}"
        )
    if rows:
        lines.append("")
        lines.append(
            f"{'dtype':<8} {'n':>9} {'d':>3} {'k':>3} {'seconds':>9} {'points/s':>11} "
            f"{'GEMM GF/s':>10} {'device GF/s':>11} {'fraction':>8}"
        )
        for r in rows:
            lines.append(
                f"{r['dtype']:<8} {r['n']:>9,} {r['d']:>3} {r['k']:>3} {r['seconds']:>9.4f} "
                f"{r['points_per_s']:>11.3g} {r['gemm_gflops_achieved']:>10.1f} "
                f"{r['gemm_gflops_device']:>11.1f} {r['gemm_fraction']:>8.3f}"
            )
    return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--allow-missing", action="store_true", help="exit 0 when no GPU backend")
    p.add_argument("--backend", choices=("cupy", "torch"), default="cupy")
    p.add_argument("--quick", action="store_true", help="checks and n = 10⁵ only")
    p.add_argument("--no-bench", action="store_true", help="run the checks only")
    p.add_argument("--memory-budget", type=int, default=8 * 2**30, help="bytes (default 8 GiB)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    found = _cupy() if args.backend == "cupy" else _torch_cuda()
    if isinstance(found, str):
        print(f"gpu_check: skipped: {found}", file=sys.stderr)
        return 0 if args.allow_missing else 2
    xp, dev, sync, label = found
    print(f"gpu_check: {label}", flush=True)
    dtypes = [xp.float64, xp.float32]
    t0 = time.perf_counter()
    checks = run_checks(xp, dev, dtypes)
    rows: list[dict[str, Any]] = []
    if not args.no_bench:
        sizes = (100_000,) if args.quick else (100_000, 1_000_000)
        rows = bench(xp, dev, dtypes, sync, sizes=sizes, budget=args.memory_budget)
    print(_table(checks, rows))
    failed = [c for c in checks if not c.ok]
    print(
        f"\n{len(checks) - len(failed)}/{len(checks)} checks passed "
        f"in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    if args.json is not None:
        checks_out = [{**asdict(c), "ok": c.ok} for c in checks]
        _write_json(args.json, {"device": label, "checks": checks_out, "bench": rows})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
