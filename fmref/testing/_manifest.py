"""Check a golden-vector suite against its schema: the manifest, then each case's arrays.

What a loaded suite guarantees (the checks below; see "What the golden suite guarantees" in
docs/oracle.md): the manifest lists exactly the schema's cases, each with the schema's
schedule and a valid mixture of the schema's kind and size; its tolerances are nowhere looser
than :data:`~fmref.testing._compare.TOLERANCES`; every case file has the listed sha256 and
holds exactly the schema's arrays, float64, of the schema's shapes, with finite inputs (β̇ may
be +inf) and no output undefined (NaN) at every row. A hash protects against accidental
corruption only: whoever rewrites a case file can rewrite its hash too.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._files import read_bytes
from ..marginals import Quantity
from ..mixtures import GaussianMixture
from ._cases import (
    COND_SUFFIX,
    INPUTS,
    LABELLED_LABELS,
    LABELLED_MIXTURE,
    LABELLED_SCHEDULES,
    OUTPUTS,
    SUITE_MIXTURES,
    SUITE_SCHEDULES,
)
from ._compare import TOLERANCES

MANIFEST = "manifest.json"
#: Largest manifest read (fmref's default suite has about 35 KiB).
MAX_MANIFEST_BYTES = 1 << 24
_SHA256 = re.compile(r"[0-9a-f]{64}")


def case_id(schedule: str, kind: str) -> str:
    """Return the id of the case of ``schedule`` and mixture ``kind``."""
    return f"{schedule}-{kind}"


def schema_cases() -> dict[str, tuple[str, dict[str, float], str]]:
    """Return id → (schedule name, schedule params, mixture kind) of every case of the schema."""
    return {case_id(s, k): (s, p, k) for s, p in SUITE_SCHEDULES for k in SUITE_MIXTURES}


def labelled_case_id(schedule: str) -> str:
    """Return the id of the labelled case of ``schedule`` (schema version 2)."""
    return f"labelled-{schedule}"


def schema_labelled_cases() -> dict[str, tuple[str, dict[str, float], str]]:
    """Return id → (schedule name, params, mixture kind) of every labelled case (schema 2)."""
    return {labelled_case_id(s): (s, p, "full") for s, p in LABELLED_SCHEDULES}


def read_manifest(root: Path) -> Any:
    """Read and parse ``root/manifest.json`` with a size limit (ValueError if malformed)."""
    path = root / MANIFEST
    try:
        text = read_bytes(path, "manifest", MAX_MANIFEST_BYTES).decode("utf-8")
    except FileNotFoundError:
        if os.path.lexists(path):  # a broken symbolic link: say so
            raise
        raise FileNotFoundError(f"{root} holds no {MANIFEST}; is it a vector suite?") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be a manifest") from None


class _Bad:
    """Raise ValueErrors that name the manifest."""

    def __init__(self, root: Path) -> None:
        self.where = root / MANIFEST

    def __call__(self, cond: bool, what: str) -> None:
        if not cond:
            raise ValueError(f"{self.where}: {what}")


def check_tolerances(tolerances: Any, root: Path) -> dict[str, tuple[float, float]]:
    """Return the manifest's (rtol, atol) by dtype, refusing any looser than the schema's."""
    need = _Bad(root)
    need(isinstance(tolerances, dict), "'tolerances' must be an object")
    out = {}
    for name, tol in tolerances.items():
        need(name in TOLERANCES, f"tolerances for unknown dtype {name!r}")
        need(isinstance(tol, dict) and set(tol) == {"rtol", "atol"}, f"tolerances[{name!r}]")
        pair = []
        for key, limit in zip(("rtol", "atol"), TOLERANCES[name], strict=True):
            v = tol[key]
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            need(ok and v >= 0, f"tolerances[{name!r}][{key!r}] must be a number >= 0")
            need(
                v <= limit,
                f"tolerances[{name!r}][{key!r}] = {v!r} is looser than the schema's {limit!r}; "
                "a suite may tighten the tolerances, never loosen them",
            )
            pair.append(float(v))
        out[name] = (pair[0], pair[1])
    return out


def check_cases(cases: Any, root: Path, *, ids_only: bool = False, labelled: bool = False) -> None:
    """Refuse a case list that is not exactly the schema's, or a malformed entry.

    ``ids_only``: check the ids alone (for a :class:`~fmref.testing.Suite` built in memory).
    ``labelled``: the list is the ``labelled_cases`` section (schema 2): each mixture must
    carry the schema's labels and the entry a CFG weight ``w``.
    """
    need = _Bad(root)
    section = "labelled_cases" if labelled else "cases"
    need(isinstance(cases, list), f"'{section}' missing")
    need(all(isinstance(c, dict) for c in cases), f"every {section} entry must be an object")
    schema = schema_labelled_cases() if labelled else schema_cases()
    ids = [c.get("id") for c in cases]
    need(all(isinstance(i, str) for i in ids), "every case needs a string 'id'")
    need(len(set(ids)) == len(ids), "a case is listed twice")
    missing = sorted(set(schema) - set(ids))
    extra = sorted(set(ids) - set(schema))
    wrong = [f"cases {missing} of the schema are missing"] if missing else []
    wrong += [f"cases {extra} are not in the schema"] if extra else []
    need(not wrong, "; ".join(wrong))
    for c in [] if ids_only else cases:
        cid = c["id"]
        sname, sparams, kind = schema[cid]
        rel = c.get("file")
        need(rel == f"cases/{cid}.npz", f"bad file entry {rel!r} for case {cid!r}")
        need(
            isinstance(c.get("sha256"), str) and bool(_SHA256.fullmatch(c["sha256"])),
            f"case {cid!r} needs a sha256 of 64 hex digits",
        )
        need(c.get("schedule") == sname, f"case {cid!r} must use schedule {sname!r}")
        need(c.get("schedule_params") == sparams, f"case {cid!r} must have params {sparams}")
        data = c.get("data")
        need(isinstance(data, dict) and data.get("kind") == kind, f"case {cid!r}: 'data'")
        labels = data.get("labels")
        if labelled:
            need(
                labels == list(LABELLED_LABELS),
                f"case {cid!r}: 'data' needs the labels {list(LABELLED_LABELS)}",
            )
            w = c.get("w")
            ok_w = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
            need(ok_w and w >= 0, f"case {cid!r}: 'w' must be a finite number >= 0")
        else:
            need(labels is None, f"case {cid!r}: an unlabelled case has no 'labels'")
        try:
            mix = GaussianMixture(
                np.asarray(data["weights"], dtype=np.float64),
                np.asarray(data["means"], dtype=np.float64),
                np.asarray(data["covs"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            need(False, f"case {cid!r} has an invalid mixture: {exc}")
        size = LABELLED_MIXTURE if labelled else SUITE_MIXTURES[kind]
        need(
            mix.kind == kind and (mix.weights.shape[0], mix.dim) == size,
            f"case {cid!r}: a {kind} mixture of (k, d) = {size} expected",
        )
        n, dim = c.get("n"), c.get("dim")
        need(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 and dim == mix.dim,
            f"case {cid!r}: 'n' must be an int >= 1 and 'dim' the mixture's dimension",
        )


def check_arrays(
    arrays: dict[str, np.ndarray],
    entry: dict[str, Any],
    root: Path,
    *,
    inputs: Mapping[str, str] = INPUTS,
    outputs: Mapping[str, Quantity] = OUTPUTS,
    cond: bool = True,
) -> None:
    """Refuse a case file that lacks or adds arrays, or whose arrays break the schema.

    ``inputs``/``outputs``: the section's (version 1: no tail marker); ``cond``: each output
    must come with its ``<output>_cond`` condition estimate (schema 2), finite and ≥ 0.
    """
    need = _Bad(root)
    rel, n, d = entry["file"], entry["n"], entry["dim"]
    conds = tuple(q + COND_SUFFIX for q in outputs) if cond else ()
    want = (*inputs, *outputs, *conds)
    missing = [k for k in want if k not in arrays]
    need(not missing, f"{rel} lacks arrays {missing}")
    extra = sorted(set(arrays) - set(want))
    need(not extra, f"{rel} has arrays the schema does not know: {extra}")
    bad = [k for k, a in arrays.items() if a.dtype != np.float64]
    need(not bad, f"{rel} has non-float64 arrays {bad}")
    # INPUTS describes each input's shape in words: "(n, d)" for points, else one per row.
    shapes: dict[str, tuple[int, ...]] = {
        k: (n, d) if "(n, d)" in desc else (n,) for k, desc in inputs.items()
    }
    shapes.update({k: q.dims(n, d, 0) for k, q in outputs.items()})
    shapes.update({k + COND_SUFFIX: q.dims(n, d, 0) for k, q in outputs.items() if cond})
    wrong = [f"{k} {arrays[k].shape}" for k in want if arrays[k].shape != shapes[k]]
    need(not wrong, f"{rel}: arrays of the wrong shape (n={n}, d={d}): {wrong}")
    for k in inputs:
        a = arrays[k]
        ok = not np.isnan(a).any() and (k == "beta_dot" or np.isfinite(a).all())
        need(ok, f"{rel}: input {k!r} must be finite (only beta_dot may be +inf)")
    for k in ("tail", "y"):
        if k in inputs:
            a = arrays[k]
            need(bool(np.all(a == np.round(a))), f"{rel}: input {k!r} must hold integers")
    if "tail" in inputs:
        need(bool(np.all((arrays["tail"] == 0) | (arrays["tail"] == 1))), f"{rel}: 'tail' is 0/1")
    for k in conds:
        a = arrays[k]
        need(bool(np.all(np.isfinite(a) & (a >= 0))), f"{rel}: {k!r} must be finite and >= 0")
    for k in outputs:
        defined = np.isfinite(arrays[k]).reshape(n, -1).all(axis=1)
        need(
            bool(defined.any()),
            f"{rel}: output {k!r} is undefined (NaN) at every row; a case must define each "
            "quantity somewhere",
        )


def written_by_fmref(folder: Path, schema: str) -> bool:
    """Return True for a real folder holding an fmref suite and nothing else.

    That is ``manifest.json`` with ``schema`` and a ``cases/`` folder holding only files the
    manifest lists. :func:`~fmref.testing.write_suite` replaces nothing else.
    """
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        manifest = read_manifest(folder)
        if not isinstance(manifest, dict) or manifest.get("schema") != schema:
            return False
        entries = []
        for section in ("cases", "labelled_cases"):
            cases = manifest.get(section)
            entries += cases if isinstance(cases, list) else []
        listed = {c.get("file") for c in entries if isinstance(c, dict)}
        if set(os.listdir(folder)) - {MANIFEST, "cases"}:
            return False
        if not (folder / "cases").exists():
            return True
        if not stat.S_ISDIR(os.lstat(folder / "cases").st_mode):
            return False
        for entry in os.scandir(folder / "cases"):
            if f"cases/{entry.name}" not in listed or not entry.is_file(follow_symlinks=False):
                return False
    except (OSError, ValueError):
        return False
    return True
