"""``fmref verify DIR --impl module:function``: check an implementation against a suite."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import IO, Any

from .._files import atomic_write
from ..testing._compare import TOLERANCES
from ..testing.vectors import LABELLED_OUTPUTS, OUTPUTS, load_suite, verify_suite


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="folder written by `fmref vectors`")
    p.add_argument(
        "--impl",
        required=True,
        help="MODULE:FUNCTION or path/to/file.py:FUNCTION with the signature "
        "impl(quantity, case, inputs) -> array or None (see fmref.testing.vectors)",
    )
    p.add_argument(
        "--quantity",
        action="append",
        choices=sorted((*OUTPUTS, *LABELLED_OUTPUTS)),
        help="repeatable",
    )
    p.add_argument(
        "--precision",
        choices=sorted(TOLERANCES),
        default="float64",
        help="the precision checked (tolerances and allowance); a result of lower precision "
        "fails (default float64)",
    )
    p.add_argument(
        "--labelled",
        action="store_true",
        help="also check the labelled cases (conditional quantities, classifier, CFG)",
    )
    p.add_argument("--all", action="store_true", help="print every row, not only failures")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (atomically)")
    p.add_argument("--junit", metavar="PATH", help="write the report as JUnit XML (atomically)")
    p.add_argument("--rtol", type=float, default=None, help="override the recommended rtol")
    p.add_argument("--atol", type=float, default=None, help="override the recommended atol")
    p.add_argument("--strict", action="store_true", help="count skipped quantities as failures")


def load_impl(spec: str) -> Any:
    """Import ``module:function`` (the current folder is importable) or ``file.py:function``."""
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"--impl must look like module:function, got {spec!r}")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise FileNotFoundError(f"--impl: no file {path}")
        loader_spec = importlib.util.spec_from_file_location(path.stem, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ValueError(f"--impl: cannot import {path}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        # Like ``python -m``: the current folder is importable, for this import only.
        added = os.getcwd() not in sys.path
        if added:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ValueError(f"--impl: cannot import {mod_name!r}: {exc}") from None
        finally:
            if added:
                sys.path.remove(os.getcwd())
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--impl: {mod_name} has no callable {fn_name!r}")
    return fn


def run(args: argparse.Namespace) -> int:
    try:  # exit 2: the suite itself is unusable (1 is kept for "the implementation failed")
        suite = load_suite(args.suite)
    except (ValueError, OSError) as exc:
        print(f"fmref verify: error: {exc}", file=sys.stderr)
        return 2
    impl = load_impl(args.impl)
    report = verify_suite(
        suite,
        impl,
        quantities=args.quantity,
        rtol=args.rtol,
        atol=args.atol,
        precision=args.precision,
        labelled=True if args.labelled else None,
    )
    print(report.table(failures_only=not args.all))
    for path, text in ((args.json, report.to_json()), (args.junit, report.to_junit())):
        if path:
            _write(path, text)
    ok = report.passed and not (args.strict and report.count("skip"))
    return 0 if ok else 1


def _write(path: str, text: str) -> None:
    """Write a report file atomically (a reader never sees half of it)."""
    data = text.encode("utf-8")

    def put(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, put)
