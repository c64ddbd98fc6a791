"""``fmref bench``: run the benchmark suite of a source checkout (``python -m benchmarks``).

The benchmarks/ folder is not installed with the package: it is found in the current
directory or next to the fmref package (an editable install), otherwise this says so.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument(
        "--out",
        default=None,
        help="folder for results.json/results.md (default benchmarks/results)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="NAME",
        help="run only these bench modules (e.g. marginal train)",
    )
    p.add_argument("--list", action="store_true", help="list the bench modules and exit")


def find_benchmarks(start: Path | None = None) -> Path | None:
    """The benchmarks/ folder of a source checkout: in ``start`` (cwd) or beside the package."""
    here = Path(__file__).resolve().parent.parent
    for root in (Path.cwd() if start is None else start, here):
        if (root / "benchmarks" / "__main__.py").is_file():
            return root / "benchmarks"
    return None


def _load_runner(folder: Path) -> ModuleType:
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    runner = importlib.import_module("benchmarks.__main__")
    found = Path(getattr(runner, "__file__", "")).resolve().parent
    if found != folder.resolve():
        raise FileNotFoundError(
            f"an unrelated 'benchmarks' package ({found}) shadows the suite in {folder}; "
            f"run 'python -m benchmarks' from {folder.parent}"
        )
    return runner


def run(args: argparse.Namespace) -> int:
    folder = find_benchmarks()
    if folder is None:
        raise FileNotFoundError(
            "the benchmark suite (benchmarks/) ships with the source repository, not the "
            "installed package: run 'fmref bench' from the root of an fmref checkout"
        )
    runner = _load_runner(folder)
    if args.list:
        print("\n".join(runner.discover()))
        return 0
    out = args.out if args.out is not None else runner.DEFAULT_OUT
    return int(runner.run_suite(quick=args.quick, out=out, only=list(args.only)))
