"""Compare a user's arrays with fmref's exact values: tolerances, conversion, the failure report.

One module for the comparison that the assert helpers and ``fmref verify`` share: the default
tolerances by dtype (:data:`TOLERANCES`), moving inputs into the user's array library and the
results back (:func:`converter`, :func:`back`), the error ratio |actual − expected| /
(atol + rtol·|expected|) (:func:`compare`), and :func:`check`, which raises ``AssertionError``
naming the worst point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._check import check_float, check_int
from .._xp import device, from_numpy, namespace, to_numpy

#: dtype name → (rtol, atol) for closed-form quantities; see the table in ``fmref.testing``.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-9),
    "float32": (1e-4, 1e-5),
    "float16": (1e-2, 1e-3),
    "bfloat16": (1e-2, 1e-3),
}


def dtype_name(dtype: Any) -> str:
    """Return 'float64', 'float32', ... for a dtype of any array library."""
    name = str(dtype).rsplit(".", 1)[-1].strip("'>")
    return name.removeprefix("dtype('").removesuffix("')")


def default_tolerance(
    dtype: Any, rtol: float | None = None, atol: float | None = None, *, scale: float = 1.0
) -> tuple[float, float]:
    """Return (rtol, atol): the given values, else :data:`TOLERANCES` for ``dtype`` × ``scale``.

    Unknown dtypes get the float32 row.
    """
    for name, v in (("rtol", rtol), ("atol", atol)):
        if v is not None:
            check_float(v, name, low=0.0)
    r0, a0 = TOLERANCES.get(dtype_name(dtype), TOLERANCES["float32"])
    return (
        r0 * scale if rtol is None else float(rtol),
        a0 * scale if atol is None else float(atol),
    )


Converter = Callable[[np.ndarray], Any]


def converter(like: Any = None, to_impl: Converter | None = None) -> Converter:
    """Return a function moving float64 NumPy inputs into the user's library.

    ``like``: an example array (its namespace, device and dtype are used); ``to_impl``: any
    callable NumPy → user array. With neither, inputs stay float64 NumPy.
    """
    if like is not None and to_impl is not None:
        raise ValueError("give at most one of like= and to_impl=")
    if to_impl is not None:
        if not callable(to_impl):
            raise TypeError(f"to_impl must be callable, got {type(to_impl).__name__}")
        return to_impl
    if like is None:
        return lambda a: a
    xp = namespace(like)
    dev, dt = device(like), like.dtype
    return lambda a: from_numpy(np.ascontiguousarray(a), xp, dev, dt)


def back(a: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Copy a user's result to float64 NumPy (DLPack or the namespace) and check its shape."""
    if a is None:
        raise TypeError(f"{name} returned None, expected an array of shape {shape}")
    arr = to_numpy(a)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must return a floating array, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must return shape {shape}, got {arr.shape}")
    return np.asarray(arr, dtype=np.float64)


@dataclass(frozen=True)
class Comparison:
    """Worst-case summary of |actual − expected| / (atol + rtol·|expected|) over a batch."""

    ratio: float  # worst ratio (inf for a NaN or inf in actual)
    quantile_ratio: float  # the ratio at the requested quantile of rows
    row: int
    column: int | None


def compare(
    actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, q: float = 1.0
) -> Comparison:
    """Compare arrays of equal shape (n,) or (n, d); non-finite actual values count as inf."""
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(actual - expected)
        ratio = err / (atol + rtol * np.abs(expected))
    ratio = np.where(np.isfinite(actual), ratio, np.inf)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # 0/0 (zero tolerance, zero error) stays 0
    ratio = np.where((err == 0) & np.isfinite(actual), 0.0, ratio)
    flat = int(np.argmax(ratio))
    if ratio.ndim == 1:
        row, col = flat, None
        per_row = ratio
    else:
        row, col = divmod(flat, ratio.shape[1])
        per_row = ratio.max(axis=1)
    qr = float(np.quantile(per_row, q, method="higher")) if per_row.size else 0.0
    return Comparison(float(ratio.reshape(-1)[flat]) if ratio.size else 0.0, qr, row, col)


def fmt(a: np.ndarray, limit: int = 6) -> str:
    """Format a short vector for an error message."""
    a = np.atleast_1d(a)
    body = ", ".join(f"{v:.10g}" for v in a[:limit])
    return f"[{body}{', …' if a.size > limit else ''}]"


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
