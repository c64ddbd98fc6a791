"""Compare a user's arrays with fmref's exact values: tolerances, conversion, the failure report.

One module for the comparison that the assert helpers and ``fmref verify`` share: the default
tolerances by dtype (:data:`TOLERANCES`), the precision a test asks for (:func:`asked_precision`,
:func:`check_precision`), moving inputs into the user's array library and the results back
(:func:`converter`, :func:`back`), the conditioning allowance (:func:`sensitivity`,
:func:`allowance`), the error ratio |actual − expected| / (atol + rtol·|expected| + allowance)
(:func:`compare`), and :func:`check`, which raises ``AssertionError`` naming the worst point
and counting failures per time.

Conditioning. Where the exact answer is ill-conditioned (a tail point 50 standard deviations
out, x − α_t x̂ at t = 0.999) no implementation of the requested precision can reproduce it to
rtol: rounding the inputs alone moves it. The allowance adds, per element,
``CONDITION_FACTOR · u · sens`` to the tolerance, where u is the unit roundoff of the requested
precision and sens = Σ_j |∂f/∂a_j| |a_j| over every input coordinate a_j (x, z, ε and t) —
the change of the exact answer f under a relative perturbation u of each input, estimated by
central differences in float64. It matters only where sens ≫ |f|; elsewhere rtol dominates.
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


#: dtype name → unit roundoff 2^-p (p the significand bits) of that precision.
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}

#: Allowance per unit roundoff and unit of condition (rounding of the inputs plus a few
#: roundings inside a backward-stable algorithm).
CONDITION_FACTOR = 64.0


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


def precision_name(precision: Any) -> str:
    """Return the dtype name of ``precision`` (a name or a dtype of any library), checked."""
    name = dtype_name(precision) if not isinstance(precision, str) else precision
    if name not in TOLERANCES:
        raise ValueError(
            f"precision must be one of {sorted(TOLERANCES)} (or such a dtype), got {precision!r}"
        )
    return name


def asked_precision(precision: Any, like: Any, sample: Any) -> str:
    """The precision a test asks for: ``precision=``, else ``like``'s dtype, else the inputs'.

    ``sample`` is an input as handed to the user (after ``to_impl``); NumPy inputs are float64.
    Never the dtype the implementation returns: a float32 result cannot pass a float64 test.
    """
    if precision is not None:
        return precision_name(precision)
    src = like if like is not None else sample
    name = dtype_name(getattr(src, "dtype", "float64"))
    return name if name in TOLERANCES else "float32"


def check_precision(name: str, out: Any, asked: str) -> None:
    """Raise ``AssertionError`` if ``out`` has a lower precision than the test asks for."""
    got = dtype_name(getattr(out, "dtype", "float64"))
    if UNIT_ROUNDOFF.get(got, UNIT_ROUNDOFF["float32"]) > UNIT_ROUNDOFF[asked]:
        raise AssertionError(
            f"{name}: the result is {got} but the test asks for {asked} (from like= or "
            f"precision=); compute in {asked}, or ask for {got} with precision={got!r} to be "
            f"judged at {got} tolerances"
        )


def sensitivity(
    f: Callable[..., np.ndarray], inputs: Sequence[np.ndarray], time_index: int | None = None
) -> np.ndarray:
    """Σ_j |∂f/∂a_j|·|a_j| per element of f(*inputs), by central differences in float64.

    ``inputs`` are (n,) or (n, d) float64 arrays; ``inputs[time_index]`` is t, kept in [0, 1]
    (one-sided at the ends), whose term is |∂f/∂t|·max(t, 1 − t). Non-finite differences (an
    undefined quantity) count as 0.
    """
    h = 2.0**-20
    base = [np.asarray(a, dtype=np.float64) for a in inputs]
    total: np.ndarray | None = None
    for i, a in enumerate(base):
        cols = [None] if a.ndim == 1 else list(range(a.shape[1]))
        for j in cols:
            v = a if j is None else a[:, j]
            # t and 1 − t both carry a relative rounding error (schedules use either).
            mag = np.maximum(np.abs(v), np.abs(1.0 - v)) if i == time_index else np.abs(v)
            step = h * mag
            hi, lo = v + step, v - step
            if i == time_index:
                hi, lo = np.minimum(hi, 1.0), np.maximum(lo, 0.0)
            width = hi - lo
            vals = []
            for moved in (hi, lo):
                args = [b.copy() for b in base]
                if j is None:
                    args[i] = moved
                else:
                    args[i][:, j] = moved
                vals.append(np.asarray(f(*args), dtype=np.float64))
            with np.errstate(invalid="ignore", divide="ignore"):
                shape = (-1,) + (1,) * (vals[0].ndim - 1)
                w = np.where(width > 0, width, 1.0).reshape(shape)
                der = np.abs(vals[0] - vals[1]) / w * mag.reshape(shape)
            der = np.where(np.isfinite(der) & (width > 0).reshape(shape), der, 0.0)
            total = der if total is None else total + der
    if total is None:
        raise ValueError("inputs must be nonempty")
    return total


def allowance(sens: np.ndarray, precision: str) -> np.ndarray:
    """The conditioning term of the tolerance: CONDITION_FACTOR · u(precision) · sens."""
    return CONDITION_FACTOR * UNIT_ROUNDOFF.get(precision, UNIT_ROUNDOFF["float32"]) * sens


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


def ratios(
    actual: np.ndarray,
    expected: np.ndarray,
    rtol: float,
    atol: float,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """|actual − expected| / (atol + rtol·|expected| + extra) elementwise.

    A non-finite actual value where the expected one is finite is inf (never hidden by a
    tolerance); an actual equal to the expected (including ±inf) is 0.
    """
    tol = atol + rtol * np.abs(expected)
    if extra is not None:
        tol = tol + extra
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(actual - expected)
        ratio = err / tol
    ratio = np.where(np.isfinite(actual), ratio, np.inf)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # 0/0 (zero tolerance, zero error) stays 0
    return np.where((err == 0) | (actual == expected), 0.0, ratio)


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    rtol: float,
    atol: float,
    q: float = 1.0,
    extra: np.ndarray | None = None,
) -> Comparison:
    """Compare arrays of equal shape (n,) or (n, d); non-finite actual values count as inf.

    ``extra``: a per-element addition to the tolerance (the conditioning :func:`allowance`).
    """
    ratio = ratios(actual, expected, rtol, atol, extra)
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
DEFAULT_TIMES = (0.0, 1e-3, 1e-2, 0.25, 0.5, 0.75, 0.99, 0.999, 1.0)


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


def per_time_counts(bad: np.ndarray, t: np.ndarray) -> str:
    """ "t = 0.99: 3/64, t = 0.999: 64/64" for the times with a failing row (rows by time)."""
    parts = []
    for tv in np.unique(t):
        at = t == tv
        k = int(np.sum(bad[at]))
        if k:
            parts.append(f"t = {tv:.6g}: {k}/{int(np.sum(at))}")
    return ", ".join(parts)


def _precision_hint(actual: np.ndarray, expected: np.ndarray, precision: str | None) -> str:
    """Say so when a float64 test fails by errors of float32 size (float32 arithmetic)."""
    if precision != "float64":
        return ""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300)
    rel = rel[np.isfinite(rel) & (np.abs(expected) > 1e-6)]
    if rel.size == 0:
        return ""
    med = float(np.median(rel))
    if not 1e-9 < med < TOLERANCES["float32"][0]:
        return ""
    return (
        f"\n  the median relative error {med:.2g} is float32 rounding: is fn computing in "
        "float32? (the test asks for float64)"
    )


def check(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    rtol: float,
    atol: float,
    quantile: float,
    ctx: Callable[[int], str],
    *,
    t: np.ndarray | None = None,
    extra: np.ndarray | None = None,
    precision: str | None = None,
) -> None:
    """Raise ``AssertionError`` at the worst row (``ctx(row)`` describes it) unless the
    ``quantile`` of |actual − expected| / (atol + rtol·|expected| + extra) over rows is ≤ 1.

    ``t`` (per row) adds the count of failing rows at each time to the message; ``extra`` is
    the conditioning :func:`allowance`; ``precision`` the precision the test asks for.
    """
    n = actual.shape[0]
    a2 = actual.reshape(n, -1) if actual.ndim != 2 else actual
    e2 = expected.reshape(n, -1) if expected.ndim != 2 else expected
    x2 = None if extra is None else extra.reshape(n, -1)
    cmp = compare(a2, e2, rtol, atol, quantile, x2)
    if cmp.quantile_ratio <= 1.0:
        return
    bad = np.asarray((ratios(a2, e2, rtol, atol, x2) > 1.0).any(axis=1))
    i, j = cmp.row, cmp.column
    comp = "" if j is None or a2.shape[1] == 1 else f" in component {j}"
    rule = "max" if quantile == 1.0 else f"{quantile:g}-quantile over points"
    cond = "" if extra is None else " + conditioning allowance"
    slices = "" if t is None else f"\n  failing points by time: {per_time_counts(bad, t)}"
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {n} points exceed the tolerance (rtol={rtol:g}, "
        f"atol={atol:g}{cond}, criterion: {rule} of the error ratio ≤ 1); worst point is row {i}:\n"
        f"  {ctx(i)}\n"
        f"  expected = {fmt(e2[i])}\n"
        f"  actual   = {fmt(a2[i])}\n"
        f"  |actual − expected| / (atol + rtol·|expected|{' + allowance' if cond else ''})"
        f" = {cmp.ratio:.3g}{comp}"
        f"{slices}{_precision_hint(a2, e2, precision)}"
    )
