"""Mutation suite: the documented default calls of fmref.testing refuse realistic bugs.

``tests/_mutants.py`` is an independent PyTorch implementation (no fmref code) with one switch
per bug. Each mutant must be refused by at least one default call (the calls of
``docs/oracle.md``, with only ``like=`` given), and the correct implementation must pass every
call in float32 and in float64. Mutants that the defaults cannot reach yet are marked
``xfail(strict=True)`` with the item of issue 10 that will catch them: when that lands the
test passes unexpectedly and the mark must go.

``python tests/test_mutations.py`` prints the catch table of docs/oracle.md (every check run
on every mutant) and the time of the whole default check of the correct implementation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip(
    "torch", reason="the mutation suite's independent implementation is written in PyTorch"
)

sys.path.insert(0, str(Path(__file__).parent))

from _mutants import MUTANTS, SAMPLER_METHODS, Impl  # noqa: E402

import fmref  # noqa: E402
from fmref.testing import (  # noqa: E402
    assert_conditional_path_close,
    assert_flow_likelihood_close,
    assert_quantity_close,
    assert_sampler_close,
    assert_score_close,
    assert_vector_field_close,
    oracle_mixture,
)

pytestmark = pytest.mark.slow

#: The marginal of the documented default test design: oracle_mixture (unequal weights, full
#: covariances), Linear schedule.
MP = fmref.MarginalPath(oracle_mixture(2), fmref.Linear())

_TAILS = "issue 10, 'a default test design with reach': tail points far from every mode"
_ENDS = "issue 10, 'a default test design with reach': times near both ends (1e-3, 0.99, 0.999)"
_WEIGHTS = (
    "issue 10, 'a default test design with reach': unequal weights in the default mixtures "
    "(random_mixture's weights are equal, so a weight bug leaves every quantity unchanged)"
)
_PRECISION = (
    "issue 10, 'precision policy': the tolerance follows the dtype the implementation "
    "returns, so float32 results pass a float64 (like=) test"
)

#: Mutants the documented defaults miss before the other items of issue 10 land: bug → reason.
ESCAPES: dict[str, str] = {}


def impl(bug: str | None = None) -> Impl:
    d = MP.data
    # 64 RK4 steps: 32 leave ~1.6e-5 of discretisation error in ∫ div u on this mixture,
    # over the likelihood check's float64 tolerance (a correct but too coarse solve).
    return Impl(d.weights, d.means, d.full_covs(), bug=bug, likelihood_steps=64)


def default_checks(im: Impl, like: Any) -> list[tuple[str, Callable[[], None]]]:
    """The documented default calls, cheapest first: (name, call)."""
    checks: list[tuple[str, Callable[[], None]]] = [
        (
            "assert_conditional_path_close (Linear)",
            lambda: assert_conditional_path_close(*im.path("linear"), fmref.Linear(), like=like),
        ),
        (
            "assert_conditional_path_close (Cosine)",
            lambda: assert_conditional_path_close(*im.path("cosine"), fmref.Cosine(), like=like),
        ),
        (
            "assert_vector_field_close",
            lambda: assert_vector_field_close(im.vector_field, MP, like=like),
        ),
        ("assert_score_close", lambda: assert_score_close(im.score, MP, like=like)),
        (
            "assert_quantity_close (log_prob)",
            lambda: assert_quantity_close(im.log_prob, MP, "log_prob", like=like),
        ),
        (
            "assert_quantity_close (divergence)",
            lambda: assert_quantity_close(im.divergence, MP, "divergence", like=like),
        ),
    ]
    for m in SAMPLER_METHODS:
        checks.append(
            (
                f"assert_sampler_close ({m})",
                lambda m=m: assert_sampler_close(im.sampler(m), reference=m, like=like),
            )
        )
    checks.append(
        (
            "assert_flow_likelihood_close",
            lambda: assert_flow_likelihood_close(im.likelihood, MP, like=like),
        )
    )
    return checks


def run_checks(im: Impl, like: Any, *, first: bool) -> dict[str, str]:
    """Run the default checks; return check name → first line of its failure (all, or the
    first failure only when ``first``)."""
    caught = {}
    for name, call in default_checks(im, like):
        try:
            call()
        except AssertionError as e:
            caught[name] = str(e).splitlines()[0]
            if first:
                break
    return caught


def _like(dtype: Any) -> Any:
    return torch.zeros(1, dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_implementation_passes_every_default_check(dtype: str) -> None:
    caught = run_checks(impl(), _like(getattr(torch, dtype)), first=False)
    assert caught == {}, f"false alarms on the correct implementation: {caught}"


def test_suite_is_large_enough() -> None:
    assert len(MUTANTS) >= 25
    assert set(ESCAPES) <= set(MUTANTS)


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=ESCAPES[b]))
        if b in ESCAPES
        else b
        for b in MUTANTS
    ],
)
def test_mutant_is_caught_by_a_default_check(bug: str) -> None:
    # float64 is what a test of exactness asks for (like=torch.float64).
    caught = run_checks(impl(bug), _like(torch.float64), first=True)
    assert caught, f"mutant {bug!r} ({MUTANTS[bug]}) passes every documented default check"


@pytest.mark.parametrize("bug", ["late_branch", "early_branch"])
def test_end_branches_are_caught_by_the_field_check(bug: str) -> None:
    # The default times include 1e-3, 1e-2, 0.99 and 0.999, so the field check itself sees
    # a branch wrong only in 0 < t < 0.02 or 0.98 < t < 1 (not only the likelihood's stages).
    with pytest.raises(AssertionError):
        assert_vector_field_close(impl(bug).vector_field, MP, like=_like(torch.float64))


def main() -> None:
    """Print the catch table (markdown) and the time of one whole default check."""
    for dtype in (torch.float64, torch.float32):
        t0 = time.perf_counter()
        bad = run_checks(impl(), _like(dtype), first=False)
        print(f"correct implementation, {dtype}: {time.perf_counter() - t0:.1f} s, failures {bad}")
    short = {
        name: name.replace("assert_", "").replace("_close", "")
        for name, _ in default_checks(impl(), None)
    }
    n_caught = 0
    print("\n| mutant | the bug | caught by (float64 defaults) |\n|---|---|---|")
    for bug, what in MUTANTS.items():
        caught = run_checks(impl(bug), _like(torch.float64), first=False)
        n_caught += bool(caught)
        by = ", ".join(short[c] for c in caught) or f"**escapes** ({ESCAPES.get(bug, '?')})"
        print(f"| `{bug}` | {what} | {by} |")
    print(f"\ncaught {n_caught} of {len(MUTANTS)}")


if __name__ == "__main__":
    main()
