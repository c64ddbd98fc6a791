"""Dask arrays through :meth:`MarginalPath.evaluate`: lazy, chunked over points, one graph.

``MarginalPath(data, path).vector_field(x, t)`` with ``x`` a ``dask.array`` of shape (n, d)
returns a lazy dask array with ``x``'s row chunks. Each row block becomes one task that runs
the ordinary (memory-bounded) NumPy/CuPy evaluation on that block; every requested quantity
of a block comes from that one task, so ``evaluate(x, t, ("score", "vector_field"))`` rotates
each block once. The MarginalPath (with its mixture parameters) enters the graph once, as a
single ``dask.delayed`` node: on a ``dask.distributed`` cluster it is shipped to each worker
once, not embedded in every task.

dask is imported only here, and only when a dask array reaches fmref.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

__all__ = ["evaluate", "is_dask"]


def is_dask(a: Any) -> bool:
    """Whether ``a`` is a ``dask.array.Array`` (never imports dask)."""
    return bool(array_api_compat.is_dask_array(a))


def _row_chunks(x: Any, name: str) -> tuple[int, ...]:
    rows = tuple(x.chunks[0])
    if any(isinstance(c, float) and math.isnan(c) for c in rows):
        raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first")
    return rows


def _as_dask_points(x: Any, t: Any, d: int) -> Any:
    import dask.array as da

    if not is_dask(x):
        # x in memory but t lazy: follow t's row chunks.
        arr = np.asarray(x) if isinstance(x, (list, tuple)) else x
        rows = t.chunks[0] if is_dask(t) and t.ndim == 1 else "auto"
        x = da.from_array(arr, chunks=(rows, -1) if getattr(arr, "ndim", 0) == 2 else -1)
    if x.ndim != 2:
        raise ValueError(f"x must have 2 dimensions (n, {d}), got shape {tuple(x.shape)}")
    if x.shape[1] != d:
        raise ValueError(f"x must have shape (n, {d}), got {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must have a real floating dtype (float32/float64), got {x.dtype}")
    if len(x.chunks[1]) != 1:
        # A row's evaluation needs all its coordinates: one block spans every column.
        x = x.rechunk({1: -1})
    _row_chunks(x, "x")
    return x


def _time_blocks(t: Any, x: Any) -> list[Any]:
    """Split ``t`` into per-block pieces aligned with ``x``'s row chunks (floats pass through)."""
    import dask.array as da

    rows = x.chunks[0]
    if isinstance(t, bool):
        raise TypeError("t must be a float or a floating array, got bool")
    if isinstance(t, (int, float, np.floating, np.integer)):
        return [float(t)] * len(rows)
    if isinstance(t, (list, tuple)):
        t = np.asarray(t, dtype=np.float64)
    if not is_dask(t):
        try:
            array_api_compat.array_namespace(t)
        except TypeError:
            raise TypeError(f"t must be a float or an array, got {type(t).__name__}") from None
        if t.ndim == 0:
            return [t] * len(rows)
        t = da.from_array(t, chunks=-1)
    if t.ndim == 0:
        return [t] * len(rows)  # a lazy scalar: each block task receives the computed 0-d array
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be a scalar or have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}"
        )
    _row_chunks(t, "t")
    if tuple(t.chunks[0]) != tuple(rows):
        t = t.rechunk((rows,))
    return list(t.to_delayed().ravel())


def _block(marginal: Any, x: Any, t: Any, want: tuple[str, ...]) -> dict[str, Any]:
    return marginal.evaluate(x, t, want)


def evaluate(marginal: Any, x: Any, t: Any, want: tuple[str, ...]) -> dict[str, Any]:
    """Build the lazy graph of ``marginal.evaluate(x, t, want)`` for dask ``x`` or ``t``.

    ``want`` holds names of :data:`fmref.marginals.QUANTITY_INFO` (already resolved), whose
    records give each block's shape.

    Returns a dict name → dask array whose first axis has ``x``'s row chunks. Input errors
    that need the values (NaN, t outside [0, 1]) surface when the result is computed.
    """
    import dask
    import dask.array as da
    from dask.array.utils import meta_from_array

    from .marginals import QUANTITY_INFO  # marginals imports this module: import on use

    x = _as_dask_points(x, t, marginal.dim)
    d, k = marginal.dim, marginal.data.n_components
    t_blocks = _time_blocks(t, x)
    # One node holding the MarginalPath: the mixture is serialised once per worker, not per task.
    mp_node = dask.delayed(marginal, pure=True, traverse=False)
    block = dask.delayed(_block, pure=True)
    parts: dict[str, list[Any]] = {q: [] for q in want}
    for xb, tb, rows in zip(x.to_delayed().ravel(), t_blocks, x.chunks[0], strict=True):
        res = block(mp_node, xb, tb, want)
        for q in want:
            shape = QUANTITY_INFO[q].dims(rows, d, k)
            meta = meta_from_array(x._meta, ndim=len(shape), dtype=x.dtype)
            parts[q].append(da.from_delayed(res[q], shape=shape, dtype=x.dtype, meta=meta))
    return {q: da.concatenate(v, axis=0) for q, v in parts.items()}
