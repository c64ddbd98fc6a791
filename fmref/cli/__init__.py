"""Command line of fmref: demo, field, report, vectors, verify (one module of this package each).

Each subcommand is one thin module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``; the modules are imported to build the parser, and their heavy
dependencies (matplotlib, tqdm, hypothesis) only when a subcommand runs. Only this package
prints. The benchmark suite is not a subcommand: it ships with the source repository, not the
installed package, and runs as ``python -m benchmarks`` from a checkout. :func:`load_impl`
is the one loader of user code (``--impl`` of ``verify`` and ``report``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: subcommand → (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fmref.cli.demo", "train the MLP by CFM on a 2-D mixture and measure it exactly"),
    "field": ("fmref.cli.field", "print the exact marginal quantities at a few points"),
    "report": ("fmref.cli.report", "grade your vector field field(x, t) against the exact answer"),
    "vectors": ("fmref.cli.vectors", "write a suite of golden test vectors"),
    "verify": ("fmref.cli.verify", "check an implementation against a vector suite"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: …)`` unless the default says nothing (None, a flag's False) or the
    help text states it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def load_impl(spec: str) -> Any:
    """Import ``module:function`` (the current folder is importable) or ``file.py:function``.

    Raises ValueError (FileNotFoundError for a missing file) naming ``--impl`` and the cause,
    whatever importing the user's module raised.
    """
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise ValueError(f"--impl must look like module:function, got {spec!r}")
    try:
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
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except (FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # the user's module: any error while importing it is their input
        raise ValueError(
            f"--impl: cannot import {mod_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ValueError(f"--impl: {mod_name} has no callable {fn_name!r}")
    return fn


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fmref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fmref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=_HelpFormatter)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"fmref {args.command}: not available in this build", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"fmref {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
