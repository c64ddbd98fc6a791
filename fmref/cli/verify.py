"""``fmref verify DIR --impl module:function``: check an implementation against a suite."""

from __future__ import annotations

import argparse
import sys

from ..testing.vectors import OUTPUTS, load_suite, verify_suite
from . import load_impl


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="folder written by `fmref vectors`")
    p.add_argument(
        "--impl",
        required=True,
        help="MODULE:FUNCTION or path/to/file.py:FUNCTION with the signature "
        "impl(quantity, case, inputs) -> array or None (see fmref.testing.vectors)",
    )
    p.add_argument("--quantity", action="append", choices=sorted(OUTPUTS), help="repeatable")
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
    report = verify_suite(suite, impl, quantities=args.quantity, rtol=args.rtol, atol=args.atol)
    print(report.table())
    ok = report.passed and not (args.strict and report.count("skip"))
    return 0 if ok else 1
