"""The memory budget bounds the temporaries of every chunked evaluation (measured, not assumed).

NumPy reports its allocations to tracemalloc, so the traced peak during one call is the
memory the call allocated. What a call must hold besides temporaries is accounted separately:

    peak ≤ budget + output + PER_POINT · n + SLACK

- output: chunk results are written into a preallocated output, which is held once;
- PER_POINT · n: the O(n) vectors of times and schedule values (t, α, β, α̇, β̇, ββ̇ and a
  validation mask), at most 16 floats a point;
- SLACK: Python objects and the parameters' per-call views, a stated constant of 256 KiB.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

import fmref.marginals as marginals
from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, random_mixture
from fmref.schedules import Cosine, Linear

SLACK = 256 * 2**10
PER_POINT = 16 * 8
MIB = 2**20

QUANTITIES = ("vector_field", "score", "log_prob", "jacobian", "divergence")


def _mixture(kind: str, k: int, d: int, seed: int = 0) -> GaussianMixture:
    return random_mixture(k, d, kind, rng=seed, mean_scale=2.0, var_range=(0.1, 1.5))


def _peak(fn, *args):  # type: ignore[no-untyped-def]
    """Return (result, bytes allocated at peak during fn(*args) above what was live before)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn(*args)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return out, peak


@pytest.fixture
def chunk_spy(monkeypatch: pytest.MonkeyPatch) -> list[slice]:
    """Record the row slices MarginalPath.evaluate processes."""
    seen: list[slice] = []
    real = marginals.chunks

    def spy(*args: object, **kwargs: object) -> Iterator[slice]:
        for sl in real(*args, **kwargs):
            seen.append(sl)
            yield sl

    monkeypatch.setattr(marginals, "chunks", spy)
    return seen


CASES = [
    ("full", 8, 16, 1 * MIB),
    ("full", 8, 16, 4 * MIB),
    ("full", 32, 4, 1 * MIB),
    ("full", 2, 64, 2 * MIB),
    ("diagonal", 16, 8, 1 * MIB),
    ("isotropic", 16, 8, 1 * MIB),
    ("dirac", 64, 4, 1 * MIB),
]


@pytest.mark.parametrize(("kind", "k", "d", "budget"), CASES)
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_peak_within_budget(
    kind: str, k: int, d: int, budget: int, quantity: str, chunk_spy: list[slice]
) -> None:
    g = np.random.default_rng(1)
    # Enough rows that the budget forces several chunks (checked below).
    n = 3000 if quantity != "jacobian" else 600
    mp = MarginalPath(_mixture(kind, k, d), Linear(), memory_budget=budget)
    x = 2 * g.standard_normal((n, d))
    t = g.uniform(0.0, 0.95, n)
    mp.evaluate(x[:3], t[:3], (quantity,))  # parameters moved and cached once, outside the count
    chunk_spy.clear()
    out, peak = _peak(mp.evaluate, x, t, (quantity,))
    assert len(chunk_spy) >= 3, f"only {len(chunk_spy)} chunk(s): the case does not test chunking"
    value = out[quantity]
    bound = budget + value.nbytes + PER_POINT * n + SLACK
    assert peak <= bound, (
        f"{kind} k={k} d={d} {quantity}: peak {peak / MIB:.3f} MiB > bound {bound / MIB:.3f} MiB "
        f"(budget {budget / MIB:.0f} MiB, output {value.nbytes / MIB:.3f} MiB)"
    )


@pytest.mark.parametrize("kind", ["full", "diagonal", "dirac"])
def test_results_do_not_depend_on_budget(kind: str) -> None:
    g = np.random.default_rng(2)
    gm = _mixture(kind, 12, 6, seed=3)
    n = 2000
    x = 2 * g.standard_normal((n, 6))
    t = g.uniform(0.0, 0.95, n)
    want = (*QUANTITIES, "dlog_prob_dt", "posterior_mean", "posterior_cov_trace")
    ref = MarginalPath(gm, Cosine()).evaluate(x, t, want)  # default budget: few chunks
    for budget in (64 * 2**10, 1 * MIB, 3 * MIB + 17):
        got = MarginalPath(gm, Cosine(), memory_budget=budget).evaluate(x, t, want)
        for q in want:
            # Only BLAS blocking differs between chunkings; sums stay within a few ulps.
            np.testing.assert_allclose(got[q], ref[q], rtol=1e-12, atol=1e-12, err_msg=q)


def test_scalar_time_and_env_budget(
    monkeypatch: pytest.MonkeyPatch, chunk_spy: list[slice]
) -> None:
    monkeypatch.setenv("FMREF_MEMORY_BUDGET", "1M")
    g = np.random.default_rng(4)
    mp = MarginalPath(_mixture("full", 16, 8), Linear())
    n = 4000
    x = 2 * g.standard_normal((n, 8))
    mp.vector_field(x[:2], 0.4)
    chunk_spy.clear()
    u, peak = _peak(mp.vector_field, x, 0.4)
    assert len(chunk_spy) >= 3
    assert peak <= MIB + u.nbytes + PER_POINT * n + SLACK
    ref = MarginalPath(_mixture("full", 16, 8), Linear(), memory_budget=256 * MIB)
    np.testing.assert_allclose(u, ref.vector_field(x, 0.4), rtol=1e-12, atol=1e-12)


def test_tiny_budget_still_progresses(chunk_spy: list[slice]) -> None:
    """A budget below one row's temporaries processes one row at a time instead of failing."""
    gm = _mixture("full", 4, 3)
    x = np.random.default_rng(5).standard_normal((7, 3))
    got = MarginalPath(gm, Linear(), memory_budget=1).score(x, 0.5)
    assert [sl.stop - sl.start for sl in chunk_spy] == [1] * 7
    np.testing.assert_allclose(
        got, MarginalPath(gm, Linear()).score(x, 0.5), rtol=1e-13, atol=1e-13
    )
