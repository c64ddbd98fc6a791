"""``fmref report --impl module:function``: grade a vector field against the exact answer.

Exit status: 0 when the report names no finding, 1 when it names findings, 2 when the input
is unusable (the field cannot be imported or called, returns the wrong shape or non-finite
values, a library is missing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..demo import SINGULAR_T_MAX, default_t_max, make_marginal
from ..mixtures import DATASETS
from ..samplers import METHODS
from ..schedules import SCHEDULES
from . import load_impl

#: Times at which the field is called once (two points each) before the report starts.
_PROBE_TIMES = (0.0, 0.5, 0.99)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--impl",
        required=True,
        help="MODULE:FUNCTION or path/to/file.py:FUNCTION, a vector field field(x, t) -> (n, d) "
        "with x (n, d) and t (n,) arrays of --array (t = 0 noise, t = 1 data); a "
        "`divergence(x, t)` attribute is used for the KL when present",
    )
    p.add_argument("--data", choices=sorted(DATASETS), default="eight_gaussians", help="p_data")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear", help="α_t, β_t")
    p.add_argument(
        "--polynomial-p", type=float, default=None, help="p of --schedule polynomial (default 2)"
    )
    p.add_argument(
        "--array",
        choices=("numpy", "torch"),
        default="numpy",
        help="the array library the field takes and returns",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument(
        "--name",
        default=None,
        help="the model's name in the verdict and figures (default: FUNCTION of --impl)",
    )
    p.add_argument("--n", type=int, default=4096, help="draws for the losses and the scale fit")
    p.add_argument("--samples", type=int, default=4000, help="ODE samples of the field")
    p.add_argument(
        "--n-kl", type=int, default=500, help="data points for the KL (0 skips the likelihood ODE)"
    )
    p.add_argument("--method", choices=sorted(METHODS), default="rk4", help="ODE method")
    p.add_argument("--steps", type=int, default=100, help="ODE steps")
    p.add_argument(
        "--t-max",
        type=float,
        default=None,
        help=f"losses over t in [0, t_max) (default 1, or {SINGULAR_T_MAX} where β̇ is "
        "infinite at t = 1, making L* over [0, 1] infinite)",
    )
    p.add_argument(
        "--z-threshold", type=float, default=4.0, help="standard errors before a finding"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds every random stream")
    p.add_argument("--out", type=Path, default=Path("fmref-report"), help="output folder")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _like(array: str, dtype: str) -> Any:
    if array == "numpy":
        return None if dtype == "float64" else np.zeros(1, dtype=np.float32)
    try:
        import torch
    except ImportError:
        raise ImportError("--array torch needs torch (pip install torch)") from None
    return torch.zeros(1, dtype=getattr(torch, dtype))


def _probe(field: Any, mp: Any, like: Any, seed: int) -> None:
    """Call the field once at a few times; raise ValueError unless it returns finite (n, d)."""
    from .._xp import device, from_numpy, namespace, to_numpy

    def put(a: np.ndarray) -> Any:
        if like is None:
            return a
        return from_numpy(a, namespace(like), device(like), like.dtype)

    n = 2 * len(_PROBE_TIMES)
    t = np.repeat(_PROBE_TIMES, 2)
    x = mp.sample(n, t, rng=np.random.default_rng([seed, 99]))
    try:
        v = np.asarray(to_numpy(field(put(x), put(t))))
    except Exception as exc:  # the user's code: whatever it raises makes the input unusable
        raise ValueError(
            f"field(x, t) raised {type(exc).__name__}: {exc} (x {x.shape}, t {t.shape})"
        ) from None
    if v.shape != x.shape:
        raise ValueError(f"field(x, t) must return shape {x.shape} for x {x.shape}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("field(x, t) returned non-finite values (NaN or inf) on samples of p_t")


def _progress(enabled: bool) -> tuple[Callable[[str, int, int], None] | None, Any]:
    if not enabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:  # plain lines without the demo extra

        def line(stage: str, done: int, total: int) -> None:
            print(f"fmref report: [{done}/{total}] {stage}", file=sys.stderr, flush=True)

        return line, None
    bars: list[Any] = []  # made at the first call, when the number of stages is known

    def update(stage: str, done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="stage", dynamic_ncols=True, file=sys.stderr))
        bar = bars[0]
        bar.update(done - bar.n)
        bar.set_description(f"report: {stage}")
        if done == total:
            bar.close()

    class _Closer:
        def close(self) -> None:
            for bar in bars:
                bar.close()

    return update, _Closer()


def run(args: argparse.Namespace) -> int:
    from ..report import report

    stage = {"now": ""}  # set once the report runs: errors then name the stage
    try:  # exit 2: nothing to grade (1 is kept for "the report names findings")
        for flag, value, low in (
            ("--n", args.n, 2),
            ("--samples", args.samples, 2),
            ("--n-kl", args.n_kl, 0),
            ("--steps", args.steps, 1),
        ):
            if value < low:
                raise ValueError(f"{flag} must be an int >= {low}, got {value}")
        if args.polynomial_p is not None and args.schedule != "polynomial":
            raise ValueError("--polynomial-p applies only to --schedule polynomial")
        mp = make_marginal(args.data, args.schedule, polynomial_p=args.polynomial_p)
        t_max = default_t_max(mp.schedule) if args.t_max is None else args.t_max
        field = load_impl(args.impl)
        like = _like(args.array, args.dtype)
        _probe(field, mp, like, args.seed)
        if not args.no_figures:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ImportError(
                    'figures need matplotlib: pip install "fmref[demo]" (or --no-figures)'
                ) from None
        callback, bar = _progress(not args.no_progress)

        def progress(name: str, done: int, total: int) -> None:
            stage["now"] = name
            if callback is not None:
                callback(name, done, total)

        try:
            rep = report(
                field,
                mp,
                # The function's name: a long module path overflows the figures' titles.
                name=args.name or args.impl.rpartition(":")[2],
                out=args.out,
                n=args.n,
                n_samples=args.samples,
                n_kl=args.n_kl,
                method=args.method,
                steps=args.steps,
                t_max=t_max,
                like=like,
                rng=args.seed,
                z_threshold=args.z_threshold,
                figures=not args.no_figures,
                progress=progress,
            )
        finally:
            if bar is not None:
                bar.close()
    except Exception as exc:  # the user's input or code: a message, never a traceback
        where = f"the field failed during '{stage['now']}': " if stage["now"] else ""
        name = "" if isinstance(exc, (ValueError, ImportError)) else f"{type(exc).__name__}: "
        print(f"fmref report: error: {where}{name}{exc}", file=sys.stderr)
        return 2
    print(f"fmref report: {rep.name} against {rep.marginal}")
    print(f"verdict: {rep.verdict}" if rep.clean else f"verdict: {len(rep.findings)} finding(s)")
    for f in rep.findings:
        print(f"  - {f.check}: {f.message}")
    names = ["report.json", "report.md", *(Path(p).name for p in rep.files)]
    print(f"wrote {', '.join(names)} to {args.out}")
    return 1 if rep.findings else 0
