"""Peak memory of a chunked large-n evaluation: ``vector_field`` vs the memory budget.

Each configuration runs in a fresh subprocess, which builds the mixture, allocates x (n × d),
warms up (parameters moved once, BLAS buffers allocated by a tiny evaluation), then resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``; ``ru_maxrss`` where that is unavailable)
and records the resident baseline. It then calls ``MarginalPath.vector_field(x, t)`` once.

What the call may hold, accounted separately:

    extra RSS ≤ budget + output + CONSTANT

- budget: the temporaries of one chunk (``memory_budget``);
- output: chunk results are written into one preallocated output array
  (n × d × itemsize: 512 MB for n = 10⁶, d = 64, float64);
- CONSTANT = 64 MiB: allocator and page granularity, Python objects, per-point schedule values
  (t, α, β, … at most 16 floats a point when t is an array; t is a scalar here).

The input x (512 MB at full size) is part of the baseline, not of the extra. tracemalloc's peak
(the bytes NumPy itself allocated during the call) is reported beside the RSS figure.

Run: ``python -m benchmarks.bench_memory [--quick]``. The full size (n = 10⁶, d = 64, k = 64
full covariances) takes minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIB = 2**20
CONSTANT = 64 * MIB
ROOT = Path(__file__).resolve().parent.parent


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int | None:
    """Peak RSS since the last reset (VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(
    n: int, d: int, k: int, budget: int, dtype: str, points: str = "normal", t: float = 0.5
) -> dict[str, Any]:
    """Measure one configuration in this process (meant to run in a fresh subprocess).

    ``points``: "normal" (N(0, I): components overlap, the dense kernel) or "exact" (samples
    of p_t: most components pruned per row, the compact layout).
    """
    import tracemalloc

    import numpy as np

    from fmref.marginals import MarginalPath
    from fmref.mixtures import GaussianMixture
    from fmref.schedules import Linear

    g = np.random.default_rng(0)
    a = g.standard_normal((k, d, d))
    covs = a @ np.swapaxes(a, 1, 2) / d + 0.1 * np.eye(d)
    mp = MarginalPath(
        GaussianMixture(np.full(k, 1 / k), 2 * g.standard_normal((k, d)), covs),
        Linear(),
        memory_budget=budget,
    )
    x = np.empty((n, d), dtype=dtype)
    step = 65536  # fill in slices so no full-size float64 temporary raises the peak
    for i in range(0, n, step):
        m = min(step, n - i)
        x[i : i + m] = mp.sample(m, t, rng=g) if points == "exact" else g.standard_normal((m, d))
    mp.vector_field(x[:64], t)  # parameters cached, BLAS buffers allocated
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset = _reset_hwm()
    base = _rss_now()
    tracemalloc.start()
    t0 = time.perf_counter()
    u = mp.vector_field(x, t)
    sec = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm = _hwm() if reset else None
    peak = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_rss_extra": peak - base,
        "traced_peak": traced,
        "baseline_rss": base,
        "seconds": sec,
        "output_bytes": int(u.nbytes),
        "input_bytes": int(x.nbytes),
        "method": "VmHWM reset" if hwm is not None else "ru_maxrss",
        "setup_peak_above_baseline": maxrss_before - base,
    }


def measure(
    n: int,
    d: int,
    k: int,
    budget: int,
    dtype: str = "float64",
    points: str = "normal",
    t: float = 0.5,
) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter and return its figures as a benchmark row."""
    cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(n), str(d), str(k)]
    cmd += [str(budget), dtype, points, str(t)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    bound = budget + r["output_bytes"] + CONSTANT
    return {
        "bench": "memory",
        "quantity": "vector_field",
        "n": n,
        "d": d,
        "k": k,
        "covariance": "full",
        "dtype": dtype,
        "points": points,
        "t": t,
        "seconds": r["seconds"],
        "points_per_s": n / r["seconds"],
        "input_mib": r["input_bytes"] / MIB,
        "output_mib": r["output_bytes"] / MIB,
        "budget_mib": budget / MIB,
        "peak_extra_rss_mib": r["peak_rss_extra"] / MIB,
        "bound_mib": bound / MIB,
        "peak_over_bound": r["peak_rss_extra"] / bound,
        "traced_peak_mib": r["traced_peak"] / MIB,
        "temporaries_over_budget": (r["peak_rss_extra"] - r["output_bytes"]) / budget,
        "within_bound": bool(r["peak_rss_extra"] <= bound),
        "rss_method": r["method"],
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Peak extra RSS of vector_field at the issue's size (n = 10⁶, d = 64, k = 64 full)."""
    n = 50_000 if quick else 1_000_000
    configs = [
        (64 * MIB, "normal", 0.5),
        (256 * MIB, "normal", 0.5),
        (256 * MIB, "exact", 0.7),  # pruned: the compact layout and its plans
    ]
    if quick:
        configs = [(16 * MIB, "normal", 0.5), (64 * MIB, "exact", 0.7)]
    return [measure(n, 64, 64, b, points=p, t=t) for b, p, t in configs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 5·10⁴ instead of 10⁶")
    p.add_argument(
        "--child",
        nargs=7,
        metavar=("N", "D", "K", "BUDGET", "DTYPE", "POINTS", "T"),
        help=argparse.SUPPRESS,
    )
    args = p.parse_args(argv)
    if args.child:
        n, d, k, budget = (int(v) for v in args.child[:4])
        dtype, points, t = args.child[4], args.child[5], float(args.child[6])
        print(json.dumps(child(n, d, k, budget, dtype, points, t)))
        return 0
    for row in run(quick=args.quick):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
