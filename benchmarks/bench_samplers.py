"""Samplers and likelihood with the exact field: points/s and the share spent in the field.

Cases (eight Gaussians: d = 2, k = 8, Linear schedule, float64 NumPy):
- 100-step Euler and RK4 from p_init for n = 10⁵ points;
- the likelihood of 10⁴ data points with the exact divergence: DOP853 at rtol = atol = 1e-10
  (the accuracy reference) and 100-step RK4, with the largest error against log p_data.

"Field share" is the wall time inside ``MarginalPath.evaluate`` (u, and div u for the
likelihood) over the total; the rest is the solver's own array arithmetic, the per-call checks
and, for DOP853, scipy's step control on the flattened state.

The ODE cases run twice: with the default memory budget (256 MiB: one chunk of 10⁵ rows, whose
(n, k, d) temporaries overflow the caches) and with 16 MiB (chunks of ~10⁴ rows).

Run: ``python -m benchmarks.bench_samplers [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fmref.likelihood import log_likelihood
from fmref.marginals import MarginalPath
from fmref.mixtures import eight_gaussians
from fmref.samplers import integrate
from fmref.schedules import Linear


def _timed_path(budget: int | None = None) -> tuple[MarginalPath, list[float]]:
    """A MarginalPath whose evaluations (every field/divergence call) add to a timer."""
    mp = MarginalPath(eight_gaussians(), Linear(), memory_budget=budget)
    spent = [0.0]
    inner: Callable[..., Any] = mp.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    mp.evaluate = evaluate  # type: ignore[method-assign]
    return mp, spent


def _ode_row(method: str, n: int, steps: int, budget: int | None = None) -> dict[str, Any]:
    mp, spent = _timed_path(budget)
    x0 = np.random.default_rng(0).standard_normal((n, 2))
    t0 = time.perf_counter()
    res = integrate(mp.vector_field, x0, method=method, steps=steps)
    sec = time.perf_counter() - t0
    return {
        "bench": "samplers",
        "case": f"{method} {steps} steps",
        "memory_budget": "default" if budget is None else f"{budget // 2**20} MiB",
        "n": n,
        "nfe": res.nfe,
        "seconds": sec,
        "points_per_s": n / sec,
        "field_share": spent[0] / sec,
        "max_abs_err_nats": None,
    }


def _likelihood_row(method: str, n: int, **kw: Any) -> dict[str, Any]:
    mp, spent = _timed_path()
    x1 = mp.data.sample(n, rng=1)
    exact = mp.data.log_prob(x1)
    spent[0] = 0.0
    t0 = time.perf_counter()
    res = log_likelihood(mp.vector_field, x1, divergence=mp.divergence, method=method, **kw)
    sec = time.perf_counter() - t0
    label = f"likelihood {method}" + (f" {kw['steps']} steps" if "steps" in kw else " tol 1e-10")
    return {
        "bench": "samplers",
        "case": label,
        "memory_budget": "default",
        "n": n,
        "nfe": res.nfe,
        "seconds": sec,
        "points_per_s": n / sec,
        "field_share": spent[0] / sec,
        "max_abs_err_nats": float(np.abs(res.log_prob - exact).max()),
    }


#: A budget whose chunks (~10⁴ rows here) keep the temporaries in cache.
SMALL_BUDGET = 16 * 2**20


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time the four cases; ``quick`` divides n by 10."""
    n_ode = 10_000 if quick else 100_000
    n_ll = 1_000 if quick else 10_000
    return [
        _ode_row("euler", n_ode, 100),
        _ode_row("euler", n_ode, 100, SMALL_BUDGET),
        _ode_row("rk4", n_ode, 100),
        _ode_row("rk4", n_ode, 100, SMALL_BUDGET),
        _likelihood_row("dop853", n_ll),
        _likelihood_row("rk4", n_ll, steps=100),
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| case | memory budget | n | field calls | seconds | points/s | field share "
        "| max error (nats) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = "—" if r["max_abs_err_nats"] is None else f"{r['max_abs_err_nats']:.1e}"
        out.append(
            f"| {r['case']} | {r['memory_budget']} | {r['n']:,} | {r['nfe']} | "
            f"{r['seconds']:.2f} | {r['points_per_s']:,.0f} | {r['field_share']:.0%} | {err} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n divided by 10")
    print(markdown(run(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
