"""Training checkpoints as plain ``.npz`` files: no pickle, written atomically, read warily.

Layout: ``magic`` (the string ``fmref-checkpoint``), ``meta`` (a JSON string holding the schema
version, step, configs, RNG state and the skeleton of nested state dicts) and one array per
tensor, named ``a/<i>``. Nested dicts and lists of arrays are flattened into the skeleton with
``{"__array__": "a/<i>"}`` leaves, so any optimizer's ``state_dict`` round-trips exactly.

Reading trusts nothing in the file: it must be a regular file (:mod:`fmref._files` names a
directory, FIFO or device as such), arrays are parsed with their sizes checked before any
allocation, and every part of the meta is checked for its type and shape, so a tampered
checkpoint is a ValueError naming what is wrong, never a KeyError, TypeError or RecursionError.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_write as atomic_write  # re-exported: demo and plotting use it
from ._files import open_regular, read_npz

MAGIC = "fmref-checkpoint"
SCHEMA = 1
_REQUIRED = (
    "schema",
    "step",
    "config",
    "model_config",
    "rng_state",
    "marginal",
    "evaluations",
    "model",
    "optimizer",
)
_MARGINAL = frozenset({"schedule", "weights", "means", "covs"})
#: The dtypes a checkpoint's arrays may have (``str``: the magic and meta strings).
_DTYPES = ("float32", "float64", "int64", "int32", "bool", "str")
#: Deeper state skeletons than this are refused (fmref's own are three levels deep).
_MAX_DEPTH = 32


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


def _unflatten(obj: Any, arrays: dict[str, np.ndarray], used: set[str], depth: int = 0) -> Any:
    """Rebuild a state from its skeleton; each node must be exactly one of the three forms."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"the state skeleton is nested deeper than {_MAX_DEPTH} levels")
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise ValueError(f"the meta has a malformed node with keys {sorted(obj)[:4]}")
        ((tag, body),) = obj.items()
        if tag == "__array__":
            if not isinstance(body, str):
                raise ValueError(f"the meta names an array by a {type(body).__name__}")
            if body not in arrays:
                raise ValueError(f"checkpoint is missing array {body!r}")
            if body in used:
                raise ValueError(f"the meta uses array {body!r} twice")
            used.add(body)
            return arrays[body]
        if tag == "__dict__" and isinstance(body, dict):
            return {k: _unflatten(v, arrays, used, depth + 1) for k, v in body.items()}
        if tag == "__list__" and isinstance(body, list):
            return [_unflatten(v, arrays, used, depth + 1) for v in body]
        raise ValueError(f"the meta has an unknown node {tag!r}")
    if isinstance(obj, list):
        raise ValueError("the meta has a bare list where a state node belongs")
    return obj


def save(path: str | os.PathLike[str], meta: dict[str, Any], states: dict[str, Any]) -> Path:
    """Write ``meta`` (JSON-able) and ``states`` (nested dicts of arrays) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    doc = dict(meta, schema=SCHEMA)
    for name, state in states.items():
        doc[name] = _flatten(state, arrays)
    payload = {"magic": np.array(MAGIC), "meta": np.array(json.dumps(doc)), **arrays}
    return atomic_write(path, lambda f: np.savez(f, **payload))  # type: ignore[arg-type]


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`; refuse anything else with a ValueError.

    FileNotFoundError when nothing is at ``path``; ValueError for a directory, FIFO or device
    (named as such), a file fmref did not write, or any tampered or truncated part.
    """
    path = Path(path)
    bad = f"{str(path)!r} is not a valid fmref checkpoint"
    f, size = open_regular(path, "checkpoint")
    with f:
        arrays = read_npz(f, bad, size=size, dtypes=_DTYPES)
    try:
        return _parse(arrays)
    except ValueError as exc:
        raise ValueError(f"{bad}: {exc}") from None


def _text(arrays: dict[str, np.ndarray], name: str) -> str:
    a = arrays.get(name)
    if a is None:
        raise ValueError("missing 'magic'/'meta' entries (a foreign .npz?)")
    if a.shape != () or a.dtype.kind != "U":
        raise ValueError(f"{name!r} must be a scalar string, got {a.dtype} of shape {a.shape}")
    return str(a)


def _parse(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    magic = _text(arrays, "magic")
    if magic != MAGIC:
        raise ValueError(f"wrong magic {magic[:40]!r}")
    try:
        doc = json.loads(_text(arrays, "meta"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"meta is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError("meta is nested too deeply to be fmref's") from None
    got = doc.get("schema") if isinstance(doc, dict) else None
    if type(got) is not int or got != SCHEMA:
        raise ValueError(f"schema {got!r}, expected {SCHEMA}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"meta lacks {missing}")
    step = doc["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"meta 'step' must be an int >= 0, got {step!r}")
    for key in ("config", "model_config", "rng_state", "marginal"):
        if not isinstance(doc[key], dict):
            raise ValueError(f"meta {key!r} must be an object, got {type(doc[key]).__name__}")
    marginal = doc["marginal"]
    if set(marginal) - {"labels"} != _MARGINAL or not isinstance(marginal["schedule"], str):
        raise ValueError(
            f"meta 'marginal' must have exactly the keys {sorted(_MARGINAL)} "
            "(and 'labels' for labelled data)"
        )
    rng_from_state(doc["rng_state"])
    _check_evaluations(doc["evaluations"], step)
    used: set[str] = set()
    out = dict(doc)
    for name in ("model", "optimizer", "extra"):
        if name in doc:
            out[name] = _unflatten(doc[name], arrays, used)
    left = set(arrays) - used - {"magic", "meta"}
    if left:
        raise ValueError(f"unexpected arrays {sorted(left)[:5]}")
    _check_dtypes(out, doc["model_config"].get("dtype"))
    return out


def _check_evaluations(evals: Any, step: int) -> None:
    if not isinstance(evals, list) or not all(isinstance(e, dict) for e in evals):
        raise ValueError("meta 'evaluations' must be a list of objects")
    for e in evals:
        at = e.get("step")
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= step:
            raise ValueError(f"an evaluation's step must be an int in [0, {step}], got {at!r}")
        for k, v in e.items():
            if k != "step" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"evaluation field {k!r} must be a number, got {v!r}")


def _check_dtypes(ck: dict[str, Any], dtype: Any) -> None:
    """Model weights and optimizer moments in the model's dtype; step_count an integer."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"model_config 'dtype' must be 'float32' or 'float64', got {dtype!r}")
    model, opt = ck["model"], ck["optimizer"]
    if not isinstance(model, dict) or not isinstance(opt, dict):
        raise ValueError("'model' and 'optimizer' must be state dicts")
    for part, state in (("model", model), ("optimizer", opt)):
        for k, a in state.items():
            if part == "optimizer" and k == "step_count":
                if not isinstance(a, np.ndarray) or a.shape != () or a.dtype.kind not in "iu":
                    raise ValueError("optimizer 'step_count' must be a scalar integer array")
            elif not isinstance(a, np.ndarray) or a.dtype.name != dtype:
                got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise ValueError(f"{part} entry {k!r} is {got}; the model's dtype is {dtype}")
    extra = ck.get("extra")
    losses = extra.get("losses") if isinstance(extra, dict) else None
    if losses is not None and (not isinstance(losses, np.ndarray) or losses.dtype != np.float64):
        raise ValueError("the loss history must be a float64 array")


def rng_from_state(state: Any) -> np.random.Generator:
    """Rebuild a NumPy Generator from ``bit_generator.state``; ValueError if it is not one."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    bitgen = getattr(np.random, name, None) if isinstance(name, str) else None
    if not (isinstance(bitgen, type) and issubclass(bitgen, np.random.BitGenerator)):
        raise ValueError(f"checkpoint holds an unknown bit generator {name!r}")
    g = np.random.Generator(bitgen())
    try:
        g.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"checkpoint holds a malformed {name} state ({exc})") from None
    return g


def check_resume_steps(saved: int, steps: int, lr_schedule: str) -> None:
    """Refuse to resume with a ``steps`` that would change the learning-rate schedule.

    The cosine schedule is laid out over ``steps`` (it decays to 0 at the last step), so a run
    resumed with another ``steps`` would take different steps from the first optimizer step
    on than the run that was checkpointed. With ``lr_schedule="constant"`` nothing depends on
    ``steps``, which may then grow or shrink freely.
    """
    if steps != saved and lr_schedule != "constant":
        raise ValueError(
            f"resume: steps={steps} differs from the checkpoint's steps={saved}, and the "
            f"{lr_schedule!r} learning-rate schedule is laid out over steps; resume with "
            f"steps={saved} (stop_at ends a run early) or train with lr_schedule='constant'"
        )


def check_float_states(state: Any) -> None:
    """Raise TypeError for an entry of a state mapping that is not a float32/float64 array.

    float16, integer, boolean and complex weights or moments are refused rather than cast.
    Anything but a mapping is left to the caller's own type check.
    """
    if not isinstance(state, Mapping):
        return
    for k, a in state.items():
        dt = getattr(a, "dtype", None)
        if dt is None or str(dt).rsplit(".", 1)[-1] not in ("float32", "float64"):
            raise TypeError(f"state[{k!r}] must be a float32 or float64 array, got dtype {dt}")
