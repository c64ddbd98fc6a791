"""Check :class:`fmref.mlp.MLP`'s arguments and (de)serialise its parameters and architecture.

The model keeps thin methods (``state_dict``, ``load_state_dict``, ``from_config``); the checks
and NumPy copies live here so that ``fmref.mlp`` stays the layers' forward and backward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._xp import Array, Namespace, to_numpy

#: The keys of :meth:`MLP.to_config`, all required by :meth:`MLP.from_config`.
CONFIG_KEYS = frozenset({"dim", "hidden", "activation", "time_frequencies", "dtype"})


def dtype_name(dtype: Any, xp: Namespace) -> str:
    for name in ("float32", "float64"):
        if isinstance(dtype, str) and dtype == name:
            return name
        if not isinstance(dtype, str) and dtype == getattr(xp, name):
            return name
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = ""
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name


def positive_int(v: Any, name: str, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return int(v)


def numpy_state(names: Sequence[str], params: Sequence[Array]) -> dict[str, np.ndarray]:
    """Return a NumPy copy of every parameter, keyed by its name."""
    return {k: np.array(to_numpy(v), copy=True) for k, v in zip(names, params, strict=True)}


def checked_state(
    names: Sequence[str], params: Sequence[Array], state: Mapping[str, Any]
) -> list[np.ndarray]:
    """Return ``state``'s arrays as NumPy in ``names`` order, each checked against ``params``."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
    missing = [k for k in names if k not in state]
    extra = [k for k in state if k not in names]
    if missing or extra:
        raise ValueError(f"state keys do not match: missing {missing}, unexpected {extra}")
    out = []
    for name, p in zip(names, params, strict=True):
        a = to_numpy(state[name])
        if a.shape != tuple(p.shape):
            raise ValueError(f"state[{name!r}] has shape {a.shape}, expected {tuple(p.shape)}")
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
            raise ValueError(f"state[{name!r}] must be a finite floating array")
        out.append(a)
    return out


def check_config(config: Any, state: Any, rng: Any) -> None:
    """Raise unless ``config`` has exactly :data:`CONFIG_KEYS` and a state or an rng is given."""
    if not isinstance(config, Mapping) or set(config) != CONFIG_KEYS:
        raise ValueError(f"config must be a mapping with exactly the keys {sorted(CONFIG_KEYS)}")
    if state is None and rng is None:
        raise TypeError("rng is required when no state is given")
