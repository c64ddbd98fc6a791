"""Training checkpoints as plain ``.npz`` files: no pickle, written atomically.

Layout: ``magic`` (the string ``fmref-checkpoint``), ``meta`` (a JSON string holding the schema
version, step, configs, RNG state and the skeleton of nested state dicts) and one array per
tensor, named ``a/<i>``. Nested dicts and lists of arrays are flattened into the skeleton with
``{"__array__": "a/<i>"}`` leaves, so any optimizer's ``state_dict`` round-trips exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC = "fmref-checkpoint"
SCHEMA = 1
_REQUIRED = ("schema", "step", "config", "model_config", "rng_state", "model", "optimizer")


def _flatten(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array_namespace__"):
        from ._xp import to_numpy

        key = f"a/{len(arrays)}"
        arrays[key] = np.array(to_numpy(obj), copy=True)
        return {"__array__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("state dict keys must be strings")
        return {"__dict__": {k: _flatten(v, arrays) for k, v in obj.items()}}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, arrays) for v in obj]}
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _unflatten(obj: Any, arrays: Any, used: set[str]) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            key = obj["__array__"]
            if key not in arrays:
                raise ValueError(f"checkpoint is missing array {key!r}")
            used.add(key)
            return np.array(arrays[key], copy=True)
        if "__dict__" in obj:
            return {k: _unflatten(v, arrays, used) for k, v in obj["__dict__"].items()}
        if "__list__" in obj:
            return [_unflatten(v, arrays, used) for v in obj["__list__"]]
        raise ValueError("checkpoint meta has an unknown node")
    return obj


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then move it into place.

    Readers never see a half-written file; the file gets the usual umask-based permissions
    (``mkstemp`` alone would leave it private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def save(path: str | os.PathLike[str], meta: dict[str, Any], states: dict[str, Any]) -> Path:
    """Write ``meta`` (JSON-able) and ``states`` (nested dicts of arrays) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    doc = dict(meta, schema=SCHEMA)
    for name, state in states.items():
        doc[name] = _flatten(state, arrays)
    payload = {"magic": np.array(MAGIC), "meta": np.array(json.dumps(doc)), **arrays}
    return atomic_write(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; refuse anything else with a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    bad = f"{str(path)!r} is not a valid fmref checkpoint"
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if "magic" not in files or "meta" not in files:
                raise ValueError(f"{bad}: missing 'magic'/'meta' entries (a foreign .npz?)")
            if str(z["magic"]) != MAGIC:
                raise ValueError(f"{bad}: wrong magic {str(z['magic'])[:40]!r}")
            doc = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in files - {"magic", "meta"}}
    except ValueError as exc:
        if str(exc).startswith(bad):
            raise
        raise ValueError(f"{bad}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{bad}: unreadable or truncated ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else None
        raise ValueError(f"{bad}: schema {got!r}, expected {SCHEMA}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"{bad}: meta lacks {missing}")
    used: set[str] = set()
    out = dict(doc)
    for name in ("model", "optimizer", "extra"):
        if name in doc:
            out[name] = _unflatten(doc[name], arrays, used)
    if used != set(arrays):
        raise ValueError(f"{bad}: unexpected arrays {sorted(set(arrays) - used)[:5]}")
    return out
