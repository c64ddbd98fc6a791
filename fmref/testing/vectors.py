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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

import numpy as np

from .._check import check_int
from .._files import is_empty_dir, write_dir
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
from ._manifest import (
    MANIFEST,
    case_id,
    check_arrays,
    check_cases,
    check_tolerances,
    read_manifest,
    written_by_fmref,
)
from ._npzio import MAX_CASE_BYTES, npz_bytes, read_npz, sha256
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


def _manifest(seed: int, per_time: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    from .. import __version__

    g = np.random.default_rng(seed)
    mixtures = {kind: make_mixture(kind, g) for kind in SUITE_MIXTURES}
    cases, files = [], {}
    for sname, sparams in SUITE_SCHEDULES:
        for kind, data in mixtures.items():
            cid = case_id(sname, kind)
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
    byte-identical files. ``out`` must not exist unless ``overwrite``; then it must be empty
    or hold an fmref suite and nothing else (nothing fmref did not write is ever removed). The
    suite is built in a temporary folder and renamed into place: of concurrent writers without
    ``overwrite`` exactly one succeeds, and a folder someone else creates at ``out`` meanwhile is
    never replaced.
    """
    seed = check_int(seed, "seed", low=0)
    per_time = check_int(per_time, "per_time", low=1)
    out = Path(out)
    ours = lambda p: written_by_fmref(p, SCHEMA)  # noqa: E731
    if os.path.lexists(out):  # fail before the work; write_dir checks again, atomically
        if not overwrite:
            raise ValueError(f"out: {out} already exists (pass overwrite=True / --force)")
        if not (is_empty_dir(out) or ours(out)):
            raise ValueError(f"out: {out} exists and is not a vector suite; refusing to replace it")
    manifest, files = _manifest(int(seed), per_time)
    big = [rel for rel, blob in files.items() if len(blob) > MAX_CASE_BYTES]
    if big:
        raise ValueError(
            f"per_time={per_time} makes {big[0]} larger than the {MAX_CASE_BYTES} bytes "
            "load_suite reads; use a smaller per_time"
        )
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    files[MANIFEST] = text.encode("utf-8")
    write_dir(out, files, overwrite=overwrite, ours=ours, what="out", kind="a vector suite")
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
    """Load a suite, refusing anything its schema does not allow (a ValueError naming it).

    Refused: a wrong schema or version, a manifest that lacks or adds a case of the schema or
    loosens a tolerance, a changed file (sha256), a file that is not regular or is over the
    size limit, anything but plain float64 arrays of the schema's shapes, and an output that is
    undefined (NaN) at every row of a case. See "What the golden suite guarantees" in
    docs/oracle.md.
    """
    root = Path(root)
    manifest = read_manifest(root)
    _need(isinstance(manifest, dict) and manifest.get("schema") == SCHEMA, "wrong 'schema'", root)
    version = manifest.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ValueError(
            f"{root / MANIFEST}: schema_version {version!r} is not supported (this fmref reads "
            f"versions {READABLE_SCHEMA_VERSIONS}); regenerate the suite with this fmref"
        )
    check_tolerances(manifest.get("tolerances", {}), root)
    check_cases(manifest.get("cases"), root)
    cases = []
    for c in manifest["cases"]:
        arrays = read_npz(root / c["file"], c["sha256"])
        if version == 1:
            arrays = {QUANTITY_ALIASES.get(k, k): a for k, a in arrays.items()}
        check_arrays(arrays, c, root)
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
    check_cases([{"id": c.id} for c in suite.cases], suite.root, ids_only=True)
    if not callable(impl):
        raise TypeError(f"impl must be callable, got {type(impl).__name__}")
    want = tuple(OUTPUTS)
    if quantities is not None:
        want = canonical_quantities(quantities, known=OUTPUTS, stacklevel=2)
    tol = check_tolerances(suite.manifest.get("tolerances", {}), suite.root)
    rows: list[VerifyRow] = []
    for case in suite.cases:
        rows.extend(
            check_case(
                case.id, case.params, case.inputs, case.expected, impl, want, tol, rtol, atol
            )
        )
    return VerifyReport(tuple(rows))
