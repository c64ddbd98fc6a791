"""Run the benchmark suite: ``python -m benchmarks [--quick] [--out DIR | --write-results]``.

Run from the root of a source checkout (the suite is not installed with fmref). Every
``benchmarks/bench_*.py`` module that exists exposes ``run(quick: bool) -> list[dict]``. The
runner calls each one, keeps going if one fails (the failure is recorded and the exit code is
1), and writes two files atomically into ``--out`` (default ``benchmarks/out/``, ignored by
git); only ``--write-results`` replaces the tracked figures in ``benchmarks/results/``:

- ``results.json``: the environment (versions, threads, CPU), and every module's rows;
- ``results.md``: one Markdown table per benchmark (rows grouped by their ``bench`` field),
  columns in the order the module wrote them, so ratios sit beside the absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Where a run writes unless told otherwise: ignored by git, so a run never edits tracked files.
DEFAULT_OUT = HERE / "out"
#: The tracked figures the README quotes; written only with ``--write-results``.
TRACKED_OUT = HERE / "results"


def build_parser() -> argparse.ArgumentParser:
    """The runner's options (the suite has its own parser: fmref's CLI does not know it)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmark suite of a source checkout (not installed with fmref).",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for results.json/results.md (default {DEFAULT_OUT.relative_to(HERE.parent)})",
    )
    where.add_argument(
        "--write-results",
        action="store_true",
        help=f"update the tracked figures in {TRACKED_OUT.relative_to(HERE.parent)}",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="NAME",
        help="run only these bench modules (e.g. marginal train)",
    )
    p.add_argument("--list", action="store_true", help="list the bench modules and exit")
    return p


def discover() -> list[str]:
    """Short names of the bench modules present (``bench_marginal.py`` → ``marginal``)."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def _module_name(name: str) -> str:
    short = name.removeprefix("bench_")
    if (HERE / f"bench_{short}.py").is_file():
        return f"benchmarks.bench_{short}"
    return name  # any importable module with a run(quick) function


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(quick: bool) -> dict[str, Any]:
    """What the figures depend on: versions, CPU, thread settings, time and commit."""
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    threads = {
        v: os.environ[v]
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        if v in os.environ
    }
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "thread_env": threads,
        "commit": commit,
        "versions": {d: _version(d) for d in ("fmref", "numpy", "scipy", "torch", "dask", "cupy")},
        "memory_budget_env": os.environ.get("FMREF_MEMORY_BUDGET"),
    }


def _clean(v: Any) -> Any:
    """JSON-safe: NumPy scalars to Python, non-finite floats to None (JSON has no NaN)."""
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def run_module(name: str, quick: bool) -> dict[str, Any]:
    """Import one bench module and call ``run(quick=quick)``; failures become a record."""
    mod_name = _module_name(name)
    t0 = time.perf_counter()
    try:
        mod = importlib.import_module(mod_name)
        fn = getattr(mod, "run", None)
        if not callable(fn):
            raise TypeError(f"{mod_name} has no run(quick) function")
        rows = fn(quick=quick)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError(
                f"{mod_name}.run must return a list of dicts, got {type(rows).__name__}"
            )
        return {"module": mod_name, "ok": True, "seconds": time.perf_counter() - t0, "rows": rows}
    except Exception as exc:  # a failing benchmark must not lose the others' results
        return {
            "module": mod_name,
            "ok": False,
            "seconds": time.perf_counter() - t0,
            "rows": [],
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    """Render the report: an environment line, then one table per ``bench`` group."""
    env = report["environment"]
    ver = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        "# fmref benchmarks",
        "",
        f"{env['date_utc']}, commit {env['commit'] or '?'}, {env['platform']}, "
        f"{env['cpu_count']} CPUs, Python {env['python']}; {ver}"
        + (" — **quick mode** (small sizes)" if env["quick"] else ""),
        "",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for res in report["modules"]:
        for row in res["rows"]:
            groups.setdefault(str(row.get("bench", res["module"])), []).append(row)
    for title, rows in groups.items():
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c != "bench" and c not in cols]
        lines += [f"## {title}", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
        lines.append("")
    failed = [m for m in report["modules"] if not m["ok"]]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- `{m['module']}`: {_fmt(m['error'])}" for m in failed]
        lines.append("")
    lines.append(
        "| module | seconds | rows |\n|---|---|---|\n"
        + "\n".join(
            f"| {m['module']} | {m['seconds']:.1f} | {len(m['rows'])} |" for m in report["modules"]
        )
    )
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and os.replace."""
    from fmref._checkpoint import atomic_write

    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def run_suite(
    quick: bool = False, out: str | os.PathLike[str] = DEFAULT_OUT, only: Sequence[str] = ()
) -> int:
    """Run the suite (or ``only`` some modules); write results.json and results.md; 0 if all ran."""
    names = list(only) if only else discover()
    if not names:
        print("no benchmarks/bench_*.py modules found", file=sys.stderr)
        return 2
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        res = run_module(name, quick)
        status = "ok" if res["ok"] else f"FAILED: {res['error']}"
        print(f"[bench] {name}: {status} ({res['seconds']:.1f} s)", file=sys.stderr, flush=True)
        results.append(res)
    report = _clean({"environment": environment(quick), "modules": results})
    text = json.dumps(report, indent=2, allow_nan=False)
    md = markdown(report)
    write_atomic(out_dir / "results.json", text + "\n")
    write_atomic(out_dir / "results.md", md)
    print(md)
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print("\n".join(discover()))
        return 0
    out = TRACKED_OUT if args.write_results else (args.out or DEFAULT_OUT)
    return run_suite(quick=args.quick, out=out, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
