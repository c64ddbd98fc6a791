"""Exact marginal evaluation: points/s for vector_field + score + log_prob.

Baselines measured in the same process:
- the machine's float64 GEMM rate (NumPy matmul of 2048² matrices, best of 5);
- when torch is installed, the PyTorch autograd route a user would write: log p_t from
  ``MixtureSameFamily(MultivariateNormal)``, the score by ``autograd.grad`` and the velocity by the
  identity u = (α̇/α) x + (α̇β²/α − ββ̇) s, same threads, same float64.

The "GEMM fraction" counts the three GEMMs the full-covariance evaluation needs (one rotation in,
two back: 6·n·k·d² flops) and divides the rate it achieves by the measured GEMM rate.

The pruning rows (:func:`pruning_rows`, the issue's configuration: full covariances,
d = k = 64, n = 10⁴, one shared t) time fmref with pruning, fmref with ``prune=False`` and the
torch route on the same points, median of several calls each, and count the (row, component)
pairs pruning kept: the share of the GEMM rate there counts only useful flops, 6·d² per kept
pair.

Run: ``python -m benchmarks.bench_marginal [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from fmref import GaussianMixture, Linear, MarginalPath, _prune
from fmref.mixtures import random_mixture

QUANTITIES = ("vector_field", "score", "log_prob")
T = 0.5


def best_time(fn: Callable[[], Any], repeat: int = 5, min_total: float = 0.3) -> float:
    """Best wall time of ``fn`` over at least ``repeat`` calls and ``min_total`` seconds.

    Two warm-up calls first: the first configuration of a run otherwise pays for cold caches
    and clock ramp-up (measured 3.5 ms vs 2.5 ms for the same call).
    """
    fn()
    fn()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeat or spent < min_total:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best


def median_time(fn: Callable[[], Any], repeat: int = 7) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_rate(size: int = 2048) -> float:
    """Float64 GEMM flop/s of this machine (NumPy/BLAS), best of 5."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    return 2 * size**3 / best_time(lambda: a @ b, repeat=5)


def mixture(k: int, d: int, kind: str, seed: int = 0) -> GaussianMixture:
    return random_mixture(k, d, kind, rng=seed, mean_scale=3.0, var_range=(0.5, 2.0))


def torch_route(data: GaussianMixture, x: np.ndarray, t: np.ndarray) -> Callable[[], Any] | None:
    """The autograd route in PyTorch; None when torch is not installed.

    ``t`` has shape (1,) (one time for every row: one Cholesky per component, outside the
    timed call) or (n,) (a time per row: p_t differs per row, so the (n, k) Cholesky
    factorisations are part of the work, as they are for a user).
    """
    try:
        import torch
    except ImportError:
        return None
    sv = Linear()(t)
    a, b, ad, bbd = (
        torch.as_tensor(np.asarray(v)).reshape(-1, 1)
        for v in (sv.alpha, sv.beta, sv.alpha_dot, sv.beta_beta_dot)
    )
    covs = torch.as_tensor(data.full_covs())
    eye = torch.eye(data.dim, dtype=torch.float64)
    means, weights = torch.as_tensor(data.means), torch.as_tensor(data.weights)
    xt = torch.as_tensor(x)

    def p_t() -> Any:
        a4, b4 = a[:, :, None, None], b[:, :, None, None]
        cov_t = a4 * a4 * covs[None] + b4 * b4 * eye
        comp = torch.distributions.MultivariateNormal(
            a[:, :, None] * means[None], scale_tril=torch.linalg.cholesky(cov_t)
        )
        mix = torch.distributions.Categorical(probs=weights.expand(len(a), -1))
        return torch.distributions.MixtureSameFamily(mix, comp, validate_args=False)

    shared = p_t() if len(t) == 1 else None

    def run() -> tuple[Any, Any, Any]:
        dist = shared if shared is not None else p_t()
        xr = xt.detach().requires_grad_(True)
        logp = dist.log_prob(xr)
        (s,) = torch.autograd.grad(logp.sum(), xr)
        u = (ad / a) * xr.detach() + (ad * b * b / a - bbd) * s
        return u, s, logp.detach()

    return run


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time every configuration; return one row per (n, d, k, covariance)."""
    rate = gemm_rate(1024 if quick else 2048)
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        torch_threads = None
    ns = (10_000,) if quick else (10_000, 100_000)
    dims = (2, 16) if quick else (2, 16, 64)
    ks = (8,) if quick else (8, 64)
    rows = []
    for n in ns:
        for d in dims:
            for k in ks:
                for kind in ("isotropic", "full"):
                    if n == 100_000 and (d, k) != (64, 64):
                        continue  # the large n only for the headline case
                    data = mixture(k, d, kind)
                    mp = MarginalPath(data, Linear())
                    x = mp.sample(n, T, rng=np.random.default_rng(1))
                    sec = best_time(lambda mp=mp, x=x: mp.evaluate(x, T, QUANTITIES))
                    row: dict[str, Any] = {
                        "bench": "marginal",
                        "n": n,
                        "d": d,
                        "k": k,
                        "covariance": kind,
                        "seconds": sec,
                        "points_per_s": n / sec,
                        "gemm_gflops": rate / 1e9,
                        "threads_note": "BLAS default threads",
                    }
                    if kind == "full":
                        row["gemm_fraction"] = 6 * n * k * d * d / sec / rate
                    route = torch_route(data, x, np.array([T])) if n <= 10_000 else None
                    if route is not None:
                        tsec = best_time(route)
                        row["torch_autograd_seconds"] = tsec
                        row["speedup_vs_torch"] = tsec / sec
                        row["torch_threads"] = torch_threads
                    rows.append(row)
    rows += per_row_times(quick)
    rows += pruning_rows(quick, rate)
    return rows


def kept_pairs(mp: MarginalPath, x: np.ndarray, t: float) -> int:
    """(row, component) pairs the pruned evaluation computed (dense rows count k)."""
    k = mp.data.n_components
    seen: list[Any] = []
    real = _prune.compute

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if kwargs.get("probe", True):  # not the calls a plan makes for its first rows
            seen.append((args[1].shape[0], out))
        return out

    _prune.compute = spy
    try:
        mp.evaluate(x, t, QUANTITIES)
    finally:
        _prune.compute = real
    pairs = 0
    for n, out in seen:
        if out is None:
            pairs += n * k
            continue
        pairs += sum(int(np.sum(tm.slots.valid)) for _, tm in out.pieces) + k * out.dense.size
    return pairs


def pruning_rows(quick: bool, rate: float) -> list[dict[str, Any]]:
    """The issue's headline: d = k = 64 full, one t, pruned vs prune=False vs torch."""
    n, d, k = (2_000 if quick else 10_000), 64, 64
    data = mixture(k, d, "full")
    rows = []
    for points, t in (("exact", 0.7), ("N(0, I)", 0.7), ("exact", 0.5), ("exact", 0.2)):
        mp = MarginalPath(data, Linear())
        dense = MarginalPath(data, Linear(), prune=False)
        g = np.random.default_rng(3)
        x = mp.sample(n, t, rng=g) if points == "exact" else g.standard_normal((n, d))
        sec = median_time(partial(mp.evaluate, x, t, QUANTITIES))
        dsec = median_time(partial(dense.evaluate, x, t, QUANTITIES))
        got, want = mp.evaluate(x, t, QUANTITIES), dense.evaluate(x, t, QUANTITIES)
        worst = max(
            float(np.max(np.abs(got[q] - want[q]) / (np.abs(want[q]) + np.median(np.abs(want[q])))))
            for q in QUANTITIES
        )
        pairs = kept_pairs(mp, x, t)
        row: dict[str, Any] = {
            "bench": "marginal_pruning",
            "points": points,
            "t": t,
            "n": n,
            "d": d,
            "k": k,
            "seconds": sec,
            "unpruned_seconds": dsec,
            "speedup_vs_unpruned": dsec / sec,
            "kept_per_row": pairs / n,
            "useful_gemm_fraction": 6 * pairs * d * d / sec / rate,
            "max_rel_diff_vs_unpruned": worst,
        }
        route = torch_route(data, x, np.array([t]))
        if route is not None:
            tsec = median_time(route)
            row["torch_autograd_seconds"] = tsec
            row["speedup_vs_torch"] = tsec / sec
            row["unpruned_speedup_vs_torch"] = tsec / dsec
        rows.append(row)
    return rows


def per_row_times(quick: bool) -> list[dict[str, Any]]:
    """A time per row (as in FM-loss evaluation and training): fmref vs the torch route."""
    n = 2_000
    rows = []
    for d, k in ((2, 8), (16, 8)) if quick else ((2, 8), (16, 8), (64, 8), (16, 64)):
        data = mixture(k, d, "full")
        mp = MarginalPath(data, Linear())
        g = np.random.default_rng(2)
        t = g.uniform(0.05, 0.95, n)
        x = mp.sample(n, t, rng=g)
        sec = best_time(lambda mp=mp, x=x, t=t: mp.evaluate(x, t, QUANTITIES))
        row: dict[str, Any] = {
            "bench": "marginal_per_row_t",
            "n": n,
            "d": d,
            "k": k,
            "covariance": "full",
            "seconds": sec,
            "points_per_s": n / sec,
        }
        route = torch_route(data, x, t)
        if route is not None:
            tsec = best_time(route, repeat=1, min_total=0.0)
            row["torch_autograd_seconds"] = tsec
            row["speedup_vs_torch"] = tsec / sec
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        f"Float64 GEMM rate measured in the same run: {rows[0]['gemm_gflops']:.1f} GFLOP/s",
        "",
        "| t | n | d | k | Σ_k | points/s | fraction of GEMM rate | torch autograd s "
        "| fmref speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["bench"] == "marginal_pruning":
            continue
        when = "per row" if r["bench"] == "marginal_per_row_t" else "shared"
        frac = f"{r['gemm_fraction']:.0%}" if "gemm_fraction" in r else "—"
        ts = f"{r['torch_autograd_seconds']:.3f}" if "torch_autograd_seconds" in r else "—"
        sp = f"{r['speedup_vs_torch']:.1f}×" if "speedup_vs_torch" in r else "—"
        out.append(
            f"| {when} | {r['n']:,} | {r['d']} | {r['k']} | {r['covariance']} | "
            f"{r['points_per_s']:,.0f} | {frac} | {ts} | {sp} |"
        )
    out += [
        "",
        "Pruning (full, d = k = 64, one t; medians):",
        "",
        "| points | t | n | kept/row | pruned s | prune=False s | torch s | vs torch "
        "| vs prune=False | useful GEMM share | max rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["bench"] != "marginal_pruning":
            continue
        ts = f"{r['torch_autograd_seconds']:.3f}" if "torch_autograd_seconds" in r else "—"
        sp = f"{r['speedup_vs_torch']:.1f}×" if "speedup_vs_torch" in r else "—"
        out.append(
            f"| {r['points']} | {r['t']} | {r['n']:,} | {r['kept_per_row']:.2f} | "
            f"{r['seconds']:.3f} | {r['unpruned_seconds']:.3f} | {ts} | {sp} | "
            f"{r['speedup_vs_unpruned']:.2f}× | {r['useful_gemm_fraction']:.0%} | "
            f"{r['max_rel_diff_vs_unpruned']:.1e} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    print(markdown(run(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
