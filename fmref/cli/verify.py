"""``fmref verify DIR --impl module:function``: check an implementation against a suite."""

from __future__ import annotations

import argparse
import sys
from typing import IO

from .._files import atomic_write
from ..testing._compare import TOLERANCES
from ..testing.vectors import LABELLED_OUTPUTS, OUTPUTS, load_suite, verify_suite
from . import load_impl


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
