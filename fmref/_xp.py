"""Array-namespace plumbing: namespace discovery, validation, logsumexp, chunking.

Everything numeric in fmref goes through the namespace returned by :func:`namespace`, so the
same code runs on NumPy, CuPy, torch (via array-api-compat) and array_api_strict.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import array_api_compat
import numpy as np

from ._check import check_int

Array = Any
Namespace = Any

#: Default bound on the temporaries of one chunked evaluation, in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_BUDGET_ENV = "FMREF_MEMORY_BUDGET"
#: Preferred bytes of temporaries per chunk, and the fewest rows a chunk is cut to for it.
CACHE_TARGET = 8 * 2**20
MIN_ROWS = 256


def namespace(*arrays: Any) -> Namespace:
    """Return the array-API namespace shared by ``arrays`` (Python scalars and None ignored)."""
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool))]
    if not arrs:
        return array_api_compat.array_namespace(np.empty(0))
    try:
        return array_api_compat.array_namespace(*arrs)
    except TypeError as exc:
        raise TypeError(f"arrays must share one array-API namespace: {exc}") from None


def device(x: Array) -> Any:
    return array_api_compat.device(x)


def traced(*arrays: Any) -> bool:
    """Whether any of ``arrays`` is a JAX tracer (inside ``jit``, ``grad`` or ``vmap``).

    A tracer has no concrete values, so checks and route choices that read values (``bool(…)``)
    cannot run on it: callers skip the value checks (eager calls still make them) and take the
    branch that is exact for every input.
    """
    core = sys.modules.get("jax.core")  # never import jax for a caller that does not use it
    tracer = getattr(core, "Tracer", None) if core is not None else None
    return tracer is not None and any(isinstance(a, tracer) for a in arrays)


def eager(xp: Namespace) -> AbstractContextManager[Any]:
    """A context in which ``xp`` computes concrete arrays even inside a JAX trace.

    Constants that outlive one call (a mixture's parameters, cached per namespace) must not be
    tracers: built inside ``jax.jit`` they would leak out of the trace on the next call.
    """
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return jax.ensure_compile_time_eval()
    return nullcontext()


def immutable(x: Array) -> bool:
    """Whether ``x`` is a JAX array (or tracer), which no operation updates in place."""
    return bool(array_api_compat.is_jax_array(x)) or traced(x)


def mutable(*arrays: Any) -> bool:
    """Whether arrays can be updated in place: not JAX (immutable), not torch under autograd.

    In-place updates of a torch tensor that autograd saved for its backward pass break the
    gradient ("modified by an inplace operation"), so those take the out-of-place form.
    """
    for a in arrays:
        if immutable(a):
            return False
        if getattr(a, "requires_grad", False):
            return False
    return True


def require_mutable(xp: Namespace, name: str) -> None:
    """Refuse an immutable namespace (JAX) where fmref updates arrays in place.

    ``MLP`` and ``Adam`` update their parameters in place; with JAX arrays ``p -= step`` only
    rebinds a local name, so training would "run" and learn nothing. A ``TypeError`` instead.
    """
    if array_api_compat.is_jax_namespace(xp):
        raise TypeError(
            f"{name}: JAX arrays are immutable and fmref's MLP/Adam update parameters in place; "
            "use NumPy, torch or CuPy for them (fmref's exact quantities do support JAX)"
        )


def imul(a: Array, b: Array) -> Array:
    """a · b, in place into ``a`` where :func:`mutable` allows it (no new array)."""
    if mutable(a, b):
        a *= b
        return a
    return a * b


def isub(a: Array, b: Array) -> Array:
    """a − b, in place into ``a`` where :func:`mutable` allows it."""
    if mutable(a, b):
        a -= b
        return a
    return a - b


def index_assignable(x: Array) -> bool:
    """Whether ``a[rows] = b`` with an integer index array works (NumPy, torch, CuPy).

    The array API standard has no assignment by index arrays (array_api_strict refuses it),
    and JAX arrays are immutable.
    """
    return bool(
        array_api_compat.is_numpy_array(x)
        or array_api_compat.is_torch_array(x)
        or array_api_compat.is_cupy_array(x)
    )


def is_numpy(xp: Namespace) -> bool:
    return bool(array_api_compat.is_numpy_namespace(xp))


def to_numpy(x: Any) -> np.ndarray:
    """Copy any array (NumPy, CuPy, torch, array_api_strict, lists) to a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return np.asarray(x.get())
    if array_api_compat.is_torch_array(x):
        return np.asarray(x.detach().cpu().numpy())
    if hasattr(x, "__dlpack__") and not isinstance(x, (list, tuple)):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError):
            pass
    return np.asarray(x)


def from_numpy(a: np.ndarray, xp: Namespace, dev: Any, dtype: Any) -> Array:
    """Move a NumPy array into namespace ``xp`` on device ``dev`` with ``dtype``."""
    if is_numpy(xp):
        return np.asarray(a, dtype=dtype)
    return xp.asarray(np.ascontiguousarray(a), dtype=dtype, device=dev)


def float_array(x: Any, name: str, *, ndim: int | None = None) -> tuple[Array, Namespace]:
    """Validate that ``x`` is a finite real floating array; return it with its namespace.

    Integer, boolean and complex inputs raise ``TypeError``: fmref never guesses a precision.
    """
    if isinstance(x, (list, tuple, int, float)):
        x = np.asarray(x, dtype=np.float64)
    try:
        xp = array_api_compat.array_namespace(x)
    except TypeError:
        raise TypeError(
            f"{name} must be an array of an array-API library, got {type(x).__name__}"
        ) from None
    # float16/bfloat16 would overflow |r|²/v beyond 256 standard deviations and NaN out
    if not xp.isdtype(x.dtype, "real floating") or x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name} must have a real floating dtype (float32/float64), got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")
    if not traced(x) and not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return x, xp


def points(x: Any, d: int, name: str = "x") -> tuple[Array, Namespace]:
    """Validate a batch of points of shape ``(n, d)``."""
    x, xp = float_array(x, name, ndim=2)
    if x.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}), got {tuple(x.shape)}")
    return x, xp


def times(t: Any, n: int, xp: Namespace, dtype: Any, dev: Any, name: str = "t") -> Array:
    """Validate ``t`` (scalar or shape ``(n,)``) in [0, 1] and return it as an ``(n,)`` array.

    dtype rule: Python floats and lists take the points' dtype; an array must already have the
    points' namespace and dtype (no silent casting), else ``TypeError``.
    """
    if isinstance(t, (int, float, np.floating, np.integer)) and not isinstance(t, bool):
        tv = float(t)
        if not (0.0 <= tv <= 1.0):  # also rejects NaN
            raise ValueError(f"{name} must lie in [0, 1], got {tv}")
        return xp.full((n,), tv, dtype=dtype, device=dev)
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a float or a floating array, got bool")
    if isinstance(t, (list, tuple)):
        t = from_numpy(np.asarray(t, dtype=np.float64), xp, dev, dtype)
    elif isinstance(t, np.ndarray) and not is_numpy(xp):
        raise TypeError(
            f"{name} is a NumPy array but the points are not: pass t as a float, a list, or an "
            "array of the points' namespace and dtype"
        )
    try:
        txp = array_api_compat.array_namespace(t)
    except TypeError:
        raise TypeError(f"{name} must be a float or an array, got {type(t).__name__}") from None
    if not txp.isdtype(t.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {t.dtype}")
    if t.ndim == 0:
        t = xp.reshape(t, (1,))
        t = xp.broadcast_to(t, (n,))
    elif t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but the points have dtype {dtype}")
    if not traced(t) and not bool(xp.all((t >= 0) & (t <= 1))):  # NaN fails both comparisons
        raise ValueError(f"{name} must lie in [0, 1] (no NaN)")
    return t


def logsumexp(a: Array, axis: int, xp: Namespace) -> Array:
    """Stable log Σ exp(a) along ``axis`` (rows of all -inf give -inf, not NaN)."""
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    s = xp.sum(xp.exp(a - m), axis=axis, keepdims=True)
    return xp.squeeze(xp.log(s) + m, axis=axis)


def memory_budget(budget: int | None = None) -> int:
    """Return the temporaries budget in bytes: the argument, ``$FMREF_MEMORY_BUDGET``, or 256 MiB.

    The environment variable accepts plain bytes or a suffix ``K``, ``M``, ``G`` (binary units).
    """
    if budget is not None:
        return check_int(budget, "memory_budget", low=1)
    raw = os.environ.get(_BUDGET_ENV)
    if not raw:
        return DEFAULT_MEMORY_BUDGET
    raw = raw.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(raw[-1:], 1)
    digits = raw[:-1] if scale != 1 else raw
    try:
        value = int(float(digits) * scale)
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400
        raise ValueError(
            f"${_BUDGET_ENV} must be a finite byte count like 268435456 or 256M, got {raw!r}"
        ) from None
    if value <= 0:
        raise ValueError(f"${_BUDGET_ENV} must be positive, got {raw}")
    return value


def chunks(
    n: int, bytes_per_row: int, budget: int | None = None, *, cpu: bool = True
) -> Iterator[slice]:
    """Yield row slices whose temporaries (``bytes_per_row`` each) fit in the memory budget.

    On a CPU (``cpu=True``), chunks also aim at ``CACHE_TARGET`` bytes of temporaries
    (elementwise passes then run from cache, several times faster for small d) but keep at
    least ``MIN_ROWS`` rows so the rotations stay efficient GEMMs. On an accelerator only the
    budget bounds them: small chunks would leave it idle.
    """
    row = max(1, bytes_per_row)
    limit = memory_budget(budget)
    if row > limit and n > 0:
        warnings.warn(
            f"one row needs ~{row} bytes of temporaries, more than the memory budget of {limit} "
            "bytes: rows are processed one at a time and the budget is exceeded",
            RuntimeWarning,
            stacklevel=3,
        )
    size = max(1, limit // row)
    if cpu:
        size = min(size, max(MIN_ROWS, CACHE_TARGET // row))
    size = min(size, max(n, 1))
    if n == 0:  # one empty chunk, so callers get empty results of the right shape
        yield slice(0, 0)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def on_cpu(x: Array) -> bool:
    """Whether ``x`` lives in host memory (NumPy, array_api_strict, torch CPU, Dask blocks)."""
    return "cpu" in str(device(x)).lower()


def take_rows(a: Array, rows: Any, xp: Namespace) -> Array:
    """a's rows: a slice (a view where the library has them), or a gather by index array."""
    return a[rows, ...] if isinstance(rows, slice) else xp.take(a, rows, axis=0)


def concat_rows(parts: list[Array], xp: Namespace) -> Array:
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


LOG_2PI = math.log(2.0 * math.pi)
