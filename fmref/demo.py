"""``fmref demo``: train the hand-written MLP by flow matching on a 2-D mixture, measure it exactly.

With no options: eight Gaussians, the Linear schedule, Algorithm 4 (target z − ε), an MLP with
three hidden layers of 128, 20 000 Adam steps of 256 (about a minute on 2 CPU cores). Writes
``summary.json``, ``checkpoint.npz`` and five PNG figures to ``--out`` (default ``fmref-out``)
and prints a table. :func:`run_demo` does the work without printing; :func:`run` is the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import atomic_write
from ._demo_report import measure, report_lines
from .marginals import MarginalPath
from .mixtures import DATASETS
from .mlp import MLP
from .schedules import SCHEDULES, Linear
from .train import OBJECTIVES, StepInfo, TrainConfig, train

#: The embedded default run (measured: see the README).
DEFAULTS: dict[str, Any] = {
    "data": "eight_gaussians",
    "schedule": "linear",
    "objective": None,
    "steps": 20000,
    "batch": 256,
    "width": 128,
    "depth": 3,
    "lr": 2e-3,
    "seed": 0,
    "eval_n": 20000,
    "samples": 4000,
    "ode_steps": 100,
}
FIGURES = (
    "conditional_path.png",
    "marginal_path.png",
    "vector_fields.png",
    "samples.png",
    "loss_curve.png",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--data", choices=sorted(DATASETS), default=d["data"])
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=d["schedule"])
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default=None,
        help="linear (Algorithm 4, the default for --schedule linear), cfm "
        "(Algorithm 3, the default otherwise) or marginal",
    )
    p.add_argument("--steps", type=int, default=d["steps"], help="Adam steps")
    p.add_argument("--batch", type=int, default=d["batch"], help="minibatch size")
    p.add_argument("--width", type=int, default=d["width"], help="hidden-layer width")
    p.add_argument("--depth", type=int, default=d["depth"], help="number of hidden layers")
    p.add_argument("--lr", type=float, default=d["lr"], help="Adam learning rate (cosine decay)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--eval-n", type=int, default=d["eval_n"], help="draws per final estimate")
    p.add_argument("--samples", type=int, default=d["samples"], help="ODE samples generated")
    p.add_argument("--ode-steps", type=int, default=d["ode_steps"], help="RK4 steps to sample")
    p.add_argument("--out", type=Path, default=Path("fmref-out"), help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    # Small GEMMs gain nothing from threads, and on a busy machine OpenBLAS's spinning threads
    # slow each step by 10-50x; threadpoolctl is optional.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _check_options(o: dict[str, Any]) -> None:
    for name, low in (
        ("steps", 1),
        ("batch", 1),
        ("width", 1),
        ("depth", 1),
        ("eval_n", 2),
        ("samples", 1),
        ("seed", 0),
        ("ode_steps", 1),
    ):
        v = o[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be an int >= {low}, got {v!r}")
    lr = o["lr"]
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"--lr must be a finite number > 0, got {lr!r}")


def run_demo(
    out: str | os.PathLike[str] = "fmref-out",
    *,
    plots: bool = True,
    progress: Callable[[StepInfo], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the demo and write its files to ``out``; return the summary (no printing).

    ``options`` override :data:`DEFAULTS` (data, schedule, objective, steps, batch, width,
    depth, lr, seed, eval_n, samples, ode_steps).
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown demo options {sorted(unknown)}")
    o = {**DEFAULTS, **options}
    _check_options(o)
    if o["data"] not in DATASETS or o["schedule"] not in SCHEDULES:
        raise ValueError(f"data must be in {sorted(DATASETS)}, schedule in {sorted(SCHEDULES)}")
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    make_data = DATASETS[o["data"]]
    mp = MarginalPath(make_data(), SCHEDULES[o["schedule"]]())
    objective = o["objective"] or ("linear" if isinstance(mp.schedule, Linear) else "cfm")
    seed = o["seed"]
    config = TrainConfig(
        steps=o["steps"],
        batch=o["batch"],
        lr=o["lr"],
        objective=objective,
        seed=seed,
        eval_every=max(1, o["steps"] // 20),
        eval_n=4096,
        floor_n=10 * o["eval_n"],
    )
    model = MLP(mp.dim, (o["width"],) * o["depth"], rng=np.random.default_rng([seed, 10]))
    with _one_blas_thread():
        res = train(model, mp, config, callback=progress, checkpoint=out / "checkpoint.npz")
        summary, gen_x, z = measure(mp, model, res, o)
        summary["wall_time_train_s"] = res.wall_time
        if plots:
            summary["figures"] = _figures(mp, model, res, o, out, gen_x, z)
    summary["wall_time_s"] = time.perf_counter() - start
    _write_json(out / "summary.json", summary)
    return summary


def _figures(
    mp: MarginalPath, model: MLP, res: Any, o: dict[str, Any], out: Path, gen_x: Any, z: Any
) -> list[str]:
    from . import plotting
    from .samplers import integrate

    g = np.random.default_rng([o["seed"], 6])
    plotting.plot_conditional_path(mp, mp.data.sample(1, rng=g)[0], out / FIGURES[0], rng=g)
    plotting.plot_marginal_path(mp, out / FIGURES[1])
    x0 = mp.sample(48, 0.0, rng=g)
    kw = dict(method="rk4", steps=o["ode_steps"], return_trajectory=True)
    trajs = tuple(np.asarray(integrate(f, x0, **kw).trajectory) for f in (mp.vector_field, model))
    plotting.plot_vector_fields(mp, model, out / FIGURES[2], trajectories=trajs)  # type: ignore[arg-type]
    plotting.plot_samples(
        mp, z, gen_x, out / FIGURES[3], title=f"ODE samples (RK4, {o['ode_steps']} steps)"
    )
    ev = res.evaluations
    floor = res.floor.value
    plotting.plot_loss_curve(
        res.losses,
        floor,
        out / FIGURES[4],
        eval_steps=[e.step for e in ev],
        fm_losses=[e.fm_loss for e in ev],
        relative=[e.relative_fm_loss for e in ev],
    )
    return list(FIGURES)


def _progress_bar(steps: int, enabled: bool) -> tuple[Callable[[StepInfo], None] | None, Any]:
    if not enabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=steps, desc="training", unit="step", dynamic_ncols=True, file=sys.stderr)
    state = {"ema": math.nan, "rel": math.nan}

    def update(info: StepInfo) -> None:
        e = state["ema"]
        state["ema"] = info.loss if math.isnan(e) else 0.98 * e + 0.02 * info.loss
        if info.evaluation is not None:
            state["rel"] = info.evaluation.relative_fm_loss
        bar.update(1)
        if info.step == info.steps:
            bar.close()  # the final measurements follow; stop the bar's clock now
        if info.step % 100 == 0 or info.step == info.steps:
            bar.set_postfix(
                loss=f"{state['ema']:.3f}",
                floor=f"{info.floor:.3f}",
                rel_fm=f"{state['rel']:.4f}",
                refresh=False,
            )

    return update, bar


def run(args: argparse.Namespace) -> int:
    opts = {k: getattr(args, k) for k in DEFAULTS}
    _check_options(opts)
    callback, bar = _progress_bar(args.steps, not args.no_progress)
    try:
        s = run_demo(args.out, plots=not args.no_plots, progress=callback, **opts)
    finally:
        if bar is not None:
            bar.close()
    for line in report_lines(s, args.out):
        print(line)
    return 0
