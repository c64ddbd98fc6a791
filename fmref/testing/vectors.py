"""Golden test vectors: write a versioned suite, load it safely, verify an implementation.

A suite is a folder with ``manifest.json`` and one ``cases/<id>.npz`` per (schedule, mixture).
Each case holds float64 inputs (t, z, eps, x = α_t z + β_t ε, and α, β, α̇, β̇ per row) and
exact outputs (see :data:`OUTPUTS`). NaN in an output marks a row where it is undefined; such
rows are not compared. The manifest records the schema version, fmref version, seed, every
case's parameters, recommended tolerances and the sha256 of every case file.

**Implementation protocol** (for :func:`verify_suite` and ``fmref verify --impl mod:fn``)::

    def impl(quantity: str, case: dict, inputs: dict[str, np.ndarray]) -> array | None

``quantity`` is a key of :data:`OUTPUTS` (an implementation written for fmref 0.1 that does
not answer ``"posterior_mean"`` is asked for 0.1's ``"x_hat"``, with a DeprecationWarning);
``case`` has ``id``, ``schedule`` (a name of
``fmref.schedules.SCHEDULES``), ``schedule_params``, ``kind``, ``weights`` (k,), ``means``
(k, d) and ``covs`` ((k,), (k, d) or (k, d, d)) as NumPy; ``inputs`` the arrays of
:data:`INPUTS`. Return an array of any array-API library (torch, JAX, CuPy, NumPy), or None
(or raise ``NotImplementedError``) for a quantity you do not implement: it is reported as
skipped, never as passed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import numpy as np

from .._check import check_int
from ..marginals import QUANTITY_ALIASES, canonical_quantities
from ._cases import (
    INPUTS,
    OUTPUTS,
    SUITE_MIXTURES,
    SUITE_SCHEDULES,
    case_arrays,
    make_mixture,
    make_schedule,
    mixture_params,
)
from ._compare import TOLERANCES
from ._npzio import npz_bytes, read_npz, sha256
from ._verify import Impl, VerifyReport, VerifyRow, check_case

__all__ = [
    "INPUTS",
    "OUTPUTS",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Case",
    "Suite",
    "VerifyReport",
    "VerifyRow",
    "load_suite",
    "verify_suite",
    "write_suite",
]

SCHEMA = "fmref-golden-vectors"
#: Version 2 names the posterior mean "posterior_mean"; version 1 (fmref 0.1) called it "x_hat".
SCHEMA_VERSION = 2
#: Versions :func:`load_suite` reads; a version-1 suite's arrays are renamed on reading.
READABLE_SCHEMA_VERSIONS = (1, 2)
MANIFEST = "manifest.json"


def _manifest(seed: int, per_time: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    from .. import __version__

    g = np.random.default_rng(seed)
    mixtures = {kind: make_mixture(kind, g) for kind in SUITE_MIXTURES}
    cases, files = [], {}
    for sname, sparams in SUITE_SCHEDULES:
        for kind, data in mixtures.items():
            cid = f"{sname}-{kind}"
            arrays = case_arrays(make_schedule(sname, sparams), data, g, per_time)
            blob = npz_bytes(arrays)
            rel = f"cases/{cid}.npz"
            files[rel] = blob
            cases.append(
                {
                    "id": cid,
                    "file": rel,
                    "sha256": sha256(blob),
                    "schedule": sname,
                    "schedule_params": sparams,
                    "data": mixture_params(data),
                    "n": int(arrays["t"].shape[0]),
                    "dim": data.dim,
                    "times": sorted({float(t) for t in arrays["t"]}),
                }
            )
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "fmref_version": __version__,
        "seed": seed,
        "dtype": "float64",
        "convention": "t = 0 noise (p_init = N(0, I)), t = 1 data; x = alpha_t z + beta_t eps",
        "inputs": INPUTS,
        "outputs": {
            k: {"description": q.description, "shape": q.shape} for k, q in OUTPUTS.items()
        },
        "tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOLERANCES.items()},
        "cases": cases,
    }
    return manifest, files


def write_suite(
    out: str | os.PathLike[str], *, seed: int = 0, per_time: int = 4, overwrite: bool = False
) -> Path:
    """Write a suite to folder ``out`` atomically; return the manifest's path.

    The same fmref version, ``seed`` and ``per_time`` (points per time per case) give
    byte-identical files. ``out`` must not exist unless ``overwrite`` (then it must hold a suite).
    """
    seed = check_int(seed, "seed", low=0)
    per_time = check_int(per_time, "per_time", low=1)
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise ValueError(f"out: {out} already exists (pass overwrite=True / --force)")
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
            raise ValueError(f"out: {out} exists and is not a vector suite; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest, files = _manifest(int(seed), per_time)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        (tmp / "cases").mkdir()
        for rel, blob in files.items():
            (tmp / rel).write_bytes(blob)
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "suite")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out / MANIFEST


@final
@dataclass(frozen=True)
class Case:
    """One loaded case: its parameters (as passed to an implementation) and arrays."""

    id: str
    params: dict[str, Any]
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]


@final
@dataclass(frozen=True)
class Suite:
    """A loaded, hash-checked suite."""

    root: Path
    manifest: dict[str, Any]
    cases: tuple[Case, ...]


def _need(cond: bool, what: str, root: Path) -> None:
    if not cond:
        raise ValueError(f"{root / MANIFEST}: {what}; not an fmref vector suite of this schema")


def load_suite(root: str | os.PathLike[str]) -> Suite:
    """Load a suite, refusing a wrong schema, a changed file or anything but plain arrays."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} holds no {MANIFEST}; is it a vector suite?") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{root / MANIFEST} is not valid JSON: {exc}") from None
    _need(isinstance(manifest, dict) and manifest.get("schema") == SCHEMA, "wrong 'schema'", root)
    version = manifest.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ValueError(
            f"{root / MANIFEST}: schema_version {version!r} is not supported (this fmref reads "
            f"versions {READABLE_SCHEMA_VERSIONS}); regenerate the suite with this fmref"
        )
    _need(isinstance(manifest.get("cases"), list), "'cases' missing", root)
    cases = []
    for c in manifest["cases"]:
        rel = c.get("file", "")
        ok = isinstance(rel, str) and rel.startswith("cases/") and ".." not in Path(rel).parts
        _need(ok and isinstance(c.get("sha256"), str), f"bad file entry {rel!r}", root)
        arrays = read_npz(root / rel, c["sha256"])
        if version == 1:
            arrays = {QUANTITY_ALIASES.get(k, k): a for k, a in arrays.items()}
        missing = [k for k in (*INPUTS, *OUTPUTS) if k not in arrays]
        _need(not missing, f"{rel} lacks arrays {missing}", root)
        bad = [k for k, a in arrays.items() if a.dtype != np.float64]
        _need(not bad, f"{rel} has non-float64 arrays {bad}", root)
        data = c["data"]
        params = {
            "id": c["id"],
            "schedule": c["schedule"],
            "schedule_params": dict(c["schedule_params"]),
            "kind": data["kind"],
            "weights": np.asarray(data["weights"], dtype=np.float64),
            "means": np.asarray(data["means"], dtype=np.float64),
            "covs": np.asarray(data["covs"], dtype=np.float64),
        }
        inputs = {k: arrays[k] for k in INPUTS}
        expected = {k: arrays[k] for k in OUTPUTS}
        cases.append(Case(c["id"], params, inputs, expected))
    return Suite(root, manifest, tuple(cases))


def verify_suite(
    root: str | os.PathLike[str] | Suite,
    impl: Impl,
    *,
    quantities: Iterable[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> VerifyReport:
    """Check ``impl`` (the protocol in this module's docstring) against every case of a suite.

    Tolerances default to the manifest's recommendation for the dtype ``impl`` returns.
    Returns a :class:`VerifyReport`; ``report.passed`` is True when nothing failed and at
    least one check ran, and ``report.table()`` formats the pass/fail table.
    """
    suite = root if isinstance(root, Suite) else load_suite(root)
    if not callable(impl):
        raise TypeError(f"impl must be callable, got {type(impl).__name__}")
    want = tuple(OUTPUTS)
    if quantities is not None:
        want = canonical_quantities(quantities, known=OUTPUTS, stacklevel=2)
    tol = {k: (v["rtol"], v["atol"]) for k, v in suite.manifest.get("tolerances", {}).items()}
    rows: list[VerifyRow] = []
    for case in suite.cases:
        rows.extend(
            check_case(
                case.id, case.params, case.inputs, case.expected, impl, want, tol, rtol, atol
            )
        )
    return VerifyReport(tuple(rows))
