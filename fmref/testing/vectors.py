"""Golden test vectors: write a versioned suite, load it safely, verify an implementation.

A suite is a folder with ``manifest.json`` and one ``cases/<id>.npz`` per (schedule, mixture).
Each case holds float64 inputs (t, z, eps, x, and α, β, α̇, β̇ per row, and a ``tail`` marker)
and exact outputs (see :data:`OUTPUTS`), each with its condition estimate ``<output>_cond``.
Rows reach where bugs hide: times 0, 1e-3, 1e-2, …, 0.99, 0.999, 1, exact samples
x = α_t z + β_t ε and tail points 10–50 standard deviations from every mode, mixtures with
unequal weights (and full covariances in the ``full`` cases). The labelled cases (section
``labelled_cases``) hold x, t, y and the conditional quantities, the exact classifier and the
CFG field (:data:`LABELLED_OUTPUTS`). NaN in an output marks a row where it is undefined; such
rows are not compared. The manifest records the schema version, fmref version, seed, every
case's parameters, recommended tolerances and the sha256 of every case file.

A row passes where |actual − expected| ≤ atol + rtol·|expected| + 16·u·cond, u the unit
roundoff of the precision asked for and cond the stored ``<output>_cond`` (the change of the
exact answer under relative perturbations of the inputs and of each component's log-density):
an ill-conditioned row (a tail point, t = 0.999) is judged as finely as the precision allows,
so no correct float32 implementation fails merely because its inputs were rounded.

**Implementation protocol** (for :func:`verify_suite` and ``fmref verify --impl mod:fn``)::

    def impl(quantity: str, case: dict, inputs: dict[str, np.ndarray]) -> array | None

``quantity`` is a key of :data:`OUTPUTS` or :data:`LABELLED_OUTPUTS` (an implementation
written for fmref 0.1 that does not answer ``"posterior_mean"`` is asked for 0.1's
``"x_hat"``, with a DeprecationWarning); labelled cases add ``labels`` (k,) and ``w`` to
``case`` and ``y`` (int64 per row) to ``inputs``;
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import numpy as np

from .._check import check_int
from .._files import is_empty_dir, write_dir
from ..marginals import QUANTITY_ALIASES, canonical_quantities
from ..mixtures import GaussianMixture
from ._cases import (
    COND_SUFFIX,
    INPUTS,
    INPUTS_V1,
    LABELLED_INPUTS,
    LABELLED_LABELS,
    LABELLED_OUTPUTS,
    LABELLED_SCHEDULES,
    LABELLED_W,
    OUTPUTS,
    SUITE_MIXTURES,
    SUITE_SCHEDULES,
    case_arrays,
    labelled_case_arrays,
    make_mixture,
    make_schedule,
    mixture_params,
    sensitivities,
)
from ._compare import CONDITION_FACTOR, TOLERANCES, UNIT_ROUNDOFF, precision_name
from ._manifest import (
    MANIFEST,
    case_id,
    check_arrays,
    check_cases,
    check_tolerances,
    labelled_case_id,
    read_manifest,
    written_by_fmref,
)
from ._npzio import MAX_CASE_BYTES, npz_bytes, read_npz, sha256
from ._verify import Impl, VerifyReport, VerifyRow, check_case

__all__ = [
    "INPUTS",
    "LABELLED_INPUTS",
    "LABELLED_OUTPUTS",
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
#: Version 2 names the posterior mean "posterior_mean" (version 1, fmref 0.1: "x_hat"), reaches
#: end times and tail points, stores condition estimates and adds the labelled cases.
SCHEMA_VERSION = 2
#: Versions :func:`load_suite` reads; a version-1 suite's arrays are renamed on reading.
READABLE_SCHEMA_VERSIONS = (1, 2)


def _manifest(seed: int, per_time: int) -> tuple[dict[str, Any], dict[str, bytes]]:
    from .. import __version__

    g = np.random.default_rng(seed)
    mixtures = {kind: make_mixture(kind, g) for kind in SUITE_MIXTURES}
    labelled_data = make_mixture("full", g, labels=LABELLED_LABELS)
    cases, labelled, files = [], [], {}
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
    for sname, sparams in LABELLED_SCHEDULES:
        cid = labelled_case_id(sname)
        arrays = labelled_case_arrays(
            make_schedule(sname, sparams), labelled_data, g, per_time, LABELLED_W
        )
        blob = npz_bytes(arrays)
        rel = f"cases/{cid}.npz"
        files[rel] = blob
        labelled.append(
            {
                "id": cid,
                "file": rel,
                "sha256": sha256(blob),
                "schedule": sname,
                "schedule_params": sparams,
                "data": mixture_params(labelled_data),
                "w": LABELLED_W,
                "n": int(arrays["t"].shape[0]),
                "dim": labelled_data.dim,
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
        "conditioning": {
            "rule": "|actual - expected| <= atol + rtol*|expected| + factor*u*<output>_cond, "
            "u the unit roundoff of the precision checked",
            "factor": CONDITION_FACTOR,
            "unit_roundoff": UNIT_ROUNDOFF,
            "suffix": COND_SUFFIX,
        },
        "cases": cases,
        "labelled_inputs": LABELLED_INPUTS,
        "labelled_outputs": {
            k: {"description": q.description, "shape": q.shape} for k, q in LABELLED_OUTPUTS.items()
        },
        "labelled_cases": labelled,
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
    """One loaded case: its parameters (as passed to an implementation) and arrays.

    ``cond``: output → its condition estimate (stored in schema 2, computed for schema 1).
    """

    id: str
    params: dict[str, Any]
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    cond: dict[str, np.ndarray] = field(default_factory=dict)


@final
@dataclass(frozen=True)
class Suite:
    """A loaded, hash-checked suite; ``labelled`` holds the labelled cases (schema 2)."""

    root: Path
    manifest: dict[str, Any]
    cases: tuple[Case, ...]
    labelled: tuple[Case, ...] = ()


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
    if version >= 2:
        check_cases(manifest.get("labelled_cases"), root, labelled=True)
    cases = []
    for c in manifest["cases"]:
        arrays = read_npz(root / c["file"], c["sha256"])
        if version == 1:
            arrays = {QUANTITY_ALIASES.get(k, k): a for k, a in arrays.items()}
        check_arrays(
            arrays, c, root, inputs=INPUTS if version >= 2 else INPUTS_V1, cond=version >= 2
        )
        params = _params(c)
        inputs = {k: arrays[k] for k in (INPUTS if version >= 2 else INPUTS_V1)}
        expected = {k: arrays[k] for k in OUTPUTS}
        if version >= 2:
            cond = {k: arrays[k + COND_SUFFIX] for k in OUTPUTS}
        else:  # schema 1 stored none: compute them (same rule) from the case's parameters
            data = GaussianMixture(params["weights"], params["means"], params["covs"])
            sched = make_schedule(params["schedule"], params["schedule_params"])
            cond = {
                k.removesuffix(COND_SUFFIX): v
                for k, v in sensitivities(sched, data, inputs).items()
            }
        cases.append(Case(c["id"], params, inputs, expected, cond))
    labelled = []
    for c in manifest.get("labelled_cases", []) if version >= 2 else []:
        arrays = read_npz(root / c["file"], c["sha256"])
        check_arrays(arrays, c, root, inputs=LABELLED_INPUTS, outputs=LABELLED_OUTPUTS)
        params = {**_params(c), "labels": np.asarray(c["data"]["labels"]), "w": float(c["w"])}
        inputs = {k: arrays[k] for k in LABELLED_INPUTS}
        inputs["y"] = inputs["y"].astype(np.int64)
        expected = {k: arrays[k] for k in LABELLED_OUTPUTS}
        cond = {k: arrays[k + COND_SUFFIX] for k in LABELLED_OUTPUTS}
        labelled.append(Case(c["id"], params, inputs, expected, cond))
    return Suite(root, manifest, tuple(cases), tuple(labelled))


def _params(c: dict[str, Any]) -> dict[str, Any]:
    data = c["data"]
    return {
        "id": c["id"],
        "schedule": c["schedule"],
        "schedule_params": dict(c["schedule_params"]),
        "kind": data["kind"],
        "weights": np.asarray(data["weights"], dtype=np.float64),
        "means": np.asarray(data["means"], dtype=np.float64),
        "covs": np.asarray(data["covs"], dtype=np.float64),
    }


def verify_suite(
    root: str | os.PathLike[str] | Suite,
    impl: Impl,
    *,
    quantities: Iterable[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    precision: Any = "float64",
    labelled: bool | None = None,
) -> VerifyReport:
    """Check ``impl`` (the protocol in this module's docstring) against every case of a suite.

    ``precision`` ("float64", "float32", … or a dtype) is the precision checked: tolerances
    are the manifest's recommendation for it plus the conditioning allowance, and a result of
    lower precision fails, saying so (a float32 implementation is verified with
    ``precision="float32"``; the returned dtype never chooses its own tolerance).
    ``labelled``: check the labelled cases (conditional quantities, classifier, CFG); default
    only when ``quantities`` names one of :data:`LABELLED_OUTPUTS`, so an implementation
    written for the unlabelled protocol is not asked for them. Returns a
    :class:`VerifyReport`; ``report.passed`` is True when nothing failed and at least one
    check ran, and ``report.table()`` formats the pass/fail table.
    """
    suite = root if isinstance(root, Suite) else load_suite(root)
    check_cases([{"id": c.id} for c in suite.cases], suite.root, ids_only=True)
    if suite.manifest.get("schema_version") != 1:
        check_cases(
            [{"id": c.id} for c in suite.labelled], suite.root, ids_only=True, labelled=True
        )
    if not callable(impl):
        raise TypeError(f"impl must be callable, got {type(impl).__name__}")
    prec = precision_name(precision)
    known = (*OUTPUTS, *LABELLED_OUTPUTS)
    if quantities is not None:
        want = canonical_quantities(quantities, known=known, stacklevel=2)
        if labelled is None:
            labelled = any(q in LABELLED_OUTPUTS for q in want)
    else:
        want = known if labelled else tuple(OUTPUTS)
    if labelled and not suite.labelled:
        raise ValueError(f"labelled: the suite at {suite.root} has no labelled cases (schema 1)")
    tol = check_tolerances(suite.manifest.get("tolerances", {}), suite.root)
    rows: list[VerifyRow] = []
    for case in (*suite.cases, *(suite.labelled if labelled else ())):
        rows.extend(
            check_case(
                case.id,
                case.params,
                case.inputs,
                case.expected,
                impl,
                want,
                tol,
                rtol,
                atol,
                precision=prec,
                cond=case.cond,
            )
        )
    return VerifyReport(tuple(rows))
