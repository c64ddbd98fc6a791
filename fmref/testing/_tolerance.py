"""Default tolerances by dtype, conversion to a user's array library, and the comparison report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._check import check_float
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
