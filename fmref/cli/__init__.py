"""Command line of fmref: demo, field, vectors, verify (one module of this package each).

Each subcommand is one thin module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``; the modules are imported to build the parser, and their heavy
dependencies (matplotlib, tqdm, hypothesis) only when a subcommand runs. Only this package
prints. The benchmark suite is not a subcommand: it ships with the source repository, not the
installed package, and runs as ``python -m benchmarks`` from a checkout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand → (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("fmref.cli.demo", "train the MLP by CFM on a 2-D mixture and measure it exactly"),
    "field": ("fmref.cli.field", "print the exact marginal quantities at a few points"),
    "vectors": ("fmref.cli.vectors", "write a suite of golden test vectors"),
    "verify": ("fmref.cli.verify", "check an implementation against a vector suite"),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="fmref", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fmref {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
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
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"fmref {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
