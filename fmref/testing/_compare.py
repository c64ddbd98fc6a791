"""The assert helpers' shared core: argument checks, default times, inputs as the user sees them,
and the comparison that raises ``AssertionError`` naming the worst point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._check import check_float, check_int
from ._tolerance import Converter, back, compare, fmt

#: Default times of :func:`fmref.testing.assert_quantity_close` (less undefined ones).
DEFAULT_TIMES = (0.0, 0.25, 0.5, 0.75, 1.0)


def check_n(n: Any) -> int:
    return check_int(n, "n", low=1)


def check_q(q: Any) -> float:
    return check_float(q, "quantile", low=0.0, high=1.0, low_open=True)


def valid_times(
    times: Sequence[float] | None,
    ok: Callable[[float], bool],
    defaults: Sequence[float] = DEFAULT_TIMES,
) -> list[float]:
    """User times are validated strictly; the defaults drop the times where ``ok`` is False."""
    if times is None:
        return [t for t in defaults if ok(t)]
    ts = [float(t) for t in np.atleast_1d(np.asarray(times, dtype=np.float64))]
    if not ts or any(not (0.0 <= t <= 1.0) for t in ts):
        raise ValueError(f"times must be a nonempty sequence of floats in [0, 1], got {times!r}")
    return ts


def user_inputs(conv: Converter, a: np.ndarray) -> tuple[Any, np.ndarray]:
    """Convert to the user's library and return the float64 values the user actually sees."""
    u = conv(a)
    return u, back(u, "the converter", a.shape)


def _fail(
    name: str,
    cmp: Any,
    rtol: float,
    atol: float,
    quantile: float,
    m: int,
    ctx: str,
    expected: np.ndarray,
    actual: np.ndarray,
    ratios_over: int,
) -> None:
    i, j = cmp.row, cmp.column
    comp = "" if j is None else f" in component {j}"
    rule = "max" if quantile == 1.0 else f"{quantile:g}-quantile over points"
    raise AssertionError(
        f"{name}: {ratios_over} of {m} points exceed the tolerance (rtol={rtol:g}, atol={atol:g},"
        f" criterion: {rule} of the error ratio ≤ 1); worst point is row {i}:\n"
        f"  {ctx}\n"
        f"  expected = {fmt(expected[i])}\n"
        f"  actual   = {fmt(actual[i])}\n"
        f"  |actual − expected| / (atol + rtol·|expected|) = {cmp.ratio:.3g}{comp}"
    )


def check(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    rtol: float,
    atol: float,
    quantile: float,
    ctx: Callable[[int], str],
) -> None:
    """Raise ``AssertionError`` at the worst row (``ctx(row)`` describes it) unless the
    ``quantile`` of |actual − expected| / (atol + rtol·|expected|) over rows is ≤ 1."""
    a2 = actual.reshape(actual.shape[0], -1) if actual.ndim > 2 else actual
    e2 = expected.reshape(expected.shape[0], -1) if expected.ndim > 2 else expected
    cmp = compare(a2, e2, rtol, atol, quantile)
    if cmp.quantile_ratio <= 1.0:
        return
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(a2 - e2) <= atol + rtol * np.abs(e2))
    over = int(np.sum(bad if bad.ndim == 1 else bad.any(axis=1)))
    _fail(name, cmp, rtol, atol, quantile, a2.shape[0], ctx(cmp.row), e2, a2, over)
