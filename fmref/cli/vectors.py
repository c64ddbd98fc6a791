"""``fmref vectors --out DIR [--seed S]``: write a suite of golden test vectors."""

from __future__ import annotations

import argparse

from ..testing.vectors import load_suite, write_suite


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to create (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="seed of the mixtures and points")
    p.add_argument("--per-time", type=int, default=4, help="points per time per case")
    p.add_argument("--force", action="store_true", help="replace an existing suite at --out")


def run(args: argparse.Namespace) -> int:
    manifest = write_suite(args.out, seed=args.seed, per_time=args.per_time, overwrite=args.force)
    suite = load_suite(manifest.parent)
    rows = sum(c.inputs["t"].shape[0] for c in (*suite.cases, *suite.labelled))
    m = suite.manifest
    print(
        f"wrote {len(suite.cases)} cases and {len(suite.labelled)} labelled cases ({rows} "
        f"points) to {manifest.parent} "
        f"(schema {m['schema_version']}, fmref {m['fmref_version']}, seed {m['seed']})"
    )
    return 0
