"""Check the scalar arguments of fmref's public entries, in one place.

Modelled on scikit-learn's ``check_scalar``: a wrong *type* is a ``TypeError``, a wrong *value*
(out of range, NaN, not one of the choices) a ``ValueError``, and every message names the
argument and what was expected. NumPy integer and floating scalars are accepted wherever Python
ones are; ``bool`` is refused where a number is meant (``True`` is an int to Python, never a
count or a step size to fmref). ``rng`` is converted here only: a ``numpy.random.Generator`` or
an int seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_callable",
    "check_choice",
    "check_float",
    "check_float_dtype",
    "check_int",
    "check_rng",
    "positional_rng",
]

_INTS = (int, np.integer)
_REALS = (int, float, np.integer, np.floating)


def _bounds(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high}")
    return " and ".join(parts)


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and the closed range [low, high].

    Raises ``TypeError`` unless ``value`` is a Python or NumPy integer (bool excluded), and
    ``ValueError`` when it lies outside the bounds given.
    """
    bound = _bounds(low, high, False, False)
    want = f"an int{' ' + bound if bound else ''}"
    if isinstance(value, bool) or not isinstance(value, _INTS):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be {want}, got {v}")
    return v


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` after checking its type and its range.

    Ints and NumPy scalars are accepted (bool is a ``TypeError``); NaN, ±inf or a value outside
    [low, high] (an open end when ``low_open``/``high_open``) is a ``ValueError``.
    """
    bound = _bounds(low, high, low_open, high_open)
    want = f"a finite real number{' ' + bound if bound else ''}"
    if isinstance(value, bool) or not isinstance(value, _REALS):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or v < low or (low_open and v == low)
    if high is not None:
        bad = bad or v > high or (high_open and v == high)
    if bad:
        raise ValueError(f"{name} must be {want}, got {v!r}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """A flag: True or False (or a NumPy bool), never a number or a string."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__}")


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of the strings ``choices`` (``TypeError`` if not a str)."""
    options = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {options}, got {value!r} ({type(value).__name__})")
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_callable(value: Any, name: str, signature: str) -> Callable[..., Any]:
    """Return ``value`` if it is callable, else raise a ``TypeError`` showing ``signature``."""
    if not callable(value):
        raise TypeError(f"{name} must be callable as {signature}, got {type(value).__name__}")
    return value


def check_rng(rng: Any, name: str = "rng") -> np.random.Generator:
    """Return a ``numpy.random.Generator``: ``rng`` itself, or one seeded with the int ``rng``.

    A NumPy integer seeds like the Python int of the same value; anything else (None, a float,
    a bool, a ``RandomState``) is a ``TypeError``: fmref never falls back to global seeding.
    """
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, _INTS) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(
                f"{name} must be a numpy.random.Generator or an int seed >= 0, got {rng}"
            )
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator or an int seed, got {rng!r}")


#: Marks a keyword-only ``rng`` the caller did not pass (None is itself a wrong rng).
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()


def positional_rng(args: tuple[Any, ...], rng: Any, where: str) -> np.random.Generator:
    """Resolve a keyword-only ``rng`` that older releases took positionally.

    ``args`` are the extra positional arguments of ``where``; one of them is taken as the rng
    with a ``DeprecationWarning`` (the positional form is kept for one release).
    """
    if len(args) > 1:
        raise TypeError(f"{where} takes rng as its only extra argument, got {len(args)}")
    if args:
        if rng is not MISSING:
            raise TypeError(f"{where} got rng both positionally and as a keyword")
        warnings.warn(
            f"passing rng positionally to {where} is deprecated; pass rng=... (keyword-only)",
            DeprecationWarning,
            stacklevel=3,
        )
        rng = args[0]
    if rng is MISSING:
        raise TypeError(f"{where} needs rng= (a numpy.random.Generator or an int seed)")
    return check_rng(rng)


def check_float_dtype(dtype: Any, xp: Any, name: str = "dtype") -> str:
    """Return "float32" or "float64" for ``dtype`` (a name, a NumPy dtype or ``xp``'s dtype)."""
    for candidate in ("float32", "float64"):
        if isinstance(dtype, str) and dtype == candidate:
            return candidate
        if not isinstance(dtype, str) and dtype == getattr(xp, candidate, None):
            return candidate
    try:
        resolved = np.dtype(dtype).name
    except TypeError:
        resolved = ""
    if resolved not in ("float32", "float64"):
        raise ValueError(f"{name} must be 'float32' or 'float64', got {dtype!r}")
    return resolved
