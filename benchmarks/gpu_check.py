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
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._gpu_checks import (
    TOL,
    TOL_CONTINUITY,
    Check,
    check_continuity,
    check_exact,
    check_identities,
    device_inputs,
    dtype_name,
    mixture,
    rel_error,
    run_checks,
)
from fmref._checkpoint import atomic_write
from fmref._xp import from_numpy
from fmref.marginals import MarginalPath
from fmref.schedules import Linear

__all__ = [
    "BENCH_QUANTITIES",
    "TOL",
    "TOL_CONTINUITY",
    "Check",
    "bench",
    "check_continuity",
    "check_exact",
    "check_identities",
    "gemm_rate",
    "main",
    "mixture",
    "run_checks",
]

#: The relative error max|got − ref| / (max|ref| + 1) under its earlier name.
_rel = rel_error

BENCH_QUANTITIES = ("vector_field", "score", "log_prob")


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
                x, _, _, _ = device_inputs(xp, device, dt, n, d, seed=n % 97)
                sec = _best(partial(mp.evaluate, x, 0.5, BENCH_QUANTITIES), sync, repeat)
                flops = 6.0 * n * k * d * d  # one rotation in, two back (the GEMMs)
                rows.append(
                    {
                        "bench": "gpu_marginal",
                        "dtype": dtype_name(dt),
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
