"""``fmref demo``: parse the options, show a progress bar, print the table of the summary."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..demo import DEFAULTS, SINGULAR_T_MAX, _check_options, run_demo
from ..mixtures import DATASETS
from ..schedules import SCHEDULES
from ..train import OBJECTIVES, StepInfo


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--data", choices=sorted(DATASETS), default=d["data"], help="p_data")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=d["schedule"], help="α_t, β_t")
    p.add_argument(
        "--polynomial-p",
        type=float,
        default=d["polynomial_p"],
        help="p >= 1 of --schedule polynomial, α_t = t^p (default 2)",
    )
    p.add_argument(
        "--t-max",
        type=float,
        default=d["t_max"],
        help="measure the final losses, L* and the identity over t in [0, t_max) (default 1, "
        f"or {SINGULAR_T_MAX} where β̇ is infinite at t = 1, making L* over [0, 1] infinite)",
    )
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
    p.add_argument("--seed", type=int, default=d["seed"], help="seeds every random stream")
    p.add_argument("--eval-n", type=int, default=d["eval_n"], help="draws per final estimate")
    p.add_argument("--samples", type=int, default=d["samples"], help="ODE samples generated")
    p.add_argument("--ode-steps", type=int, default=d["ode_steps"], help="RK4 steps to sample")
    p.add_argument("--out", type=Path, default=Path("fmref-out"), help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _progress_bar(steps: int, enabled: bool) -> tuple[Callable[[StepInfo], None] | None, Any]:
    if not enabled:
        return None, None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=steps, desc="training", unit="step", dynamic_ncols=True, file=sys.stderr)
    state = {"ema": math.nan, "rel": math.nan}  # rel: none until the first evaluation

    def update(info: StepInfo) -> None:
        e = state["ema"]
        state["ema"] = info.loss if math.isnan(e) else 0.98 * e + 0.02 * info.loss
        if info.evaluation is not None:
            state["rel"] = info.evaluation.relative_fm_loss
        bar.update(1)
        if info.step == info.steps:
            bar.close()  # the final measurements follow; stop the bar's clock now
        if info.step % 100 == 0 or info.step == info.steps:
            shown = {"loss": f"{state['ema']:.3f}"}
            if math.isfinite(info.floor):  # an infinite L* is reported after training
                shown["floor"] = f"{info.floor:.3f}"
            if not math.isnan(state["rel"]):
                shown["rel_fm"] = f"{state['rel']:.4f}"
            bar.set_postfix(shown, refresh=False)

    return update, bar


def _fmt(v: float | None, se: float | None = None) -> str:
    if v is None:
        return f"{'inf':>12}"
    s = f"{v:12.5f}"
    return s + (f" ± {se:.5f}" if se is not None else "")


def report_lines(s: dict[str, Any], out: Path) -> list[str]:
    """Return the table ``fmref demo`` prints for summary ``s`` written to ``out``."""
    rel = s["relative_fm_loss"]
    t_max = s.get("t_max", 1.0)
    over = "" if t_max == 1.0 else f" over [0, {t_max:g}]"
    floor_finite = s["cfm_floor"] is not None
    gap = (
        (
            "CFM − FM − L* (should be ~0)",
            _fmt(s["cfm_minus_fm_minus_floor"], s["cfm_minus_fm_minus_floor_stderr"]),
        )
        if floor_finite
        else ("CFM − FM − L*", f"{'—':>12}   (not tested: L* is infinite)")
    )
    rows = [
        (f"final CFM loss{over} (Monte Carlo)", _fmt(s["cfm_loss"], s["cfm_loss_stderr"])),
        (f"L* irreducible floor{over}", _fmt(s["cfm_floor"], s["cfm_floor_stderr"])),
        (f"FM loss{over} (exact u_t)", _fmt(s["fm_loss"], s["fm_loss_stderr"])),
        (
            "relative FM loss",
            _fmt(rel, s["relative_fm_loss_stderr"])
            + ("   (<= 0.10)" if rel <= 0.10 else "   (> 0.10!)"),
        ),
        gap,
        (
            "mean log p_data, generated",
            _fmt(s["log_p_data_generated"], s["log_p_data_generated_stderr"]),
        ),
        (
            "mean log p_data, exact-field ODE",
            _fmt(s["log_p_data_exact_field_ode"], s["log_p_data_exact_field_ode_stderr"]),
        ),
        ("mean log p_data, data itself", _fmt(s["log_p_data_data"], s["log_p_data_data_stderr"])),
        ("energy distance to data: generated", _fmt(s["energy_distance_generated"])),
        ("  ... exact-field ODE (reference)", _fmt(s["energy_distance_exact_field_ode"])),
        ("wall time (s)", f"{s['wall_time_s']:12.1f}   (training {s['wall_time_train_s']:.1f})"),
    ]
    lines = [
        f"fmref demo: {s['data']}, {s['schedule']}, objective {s['objective']}, "
        f"MLP {s['model']['hidden']}, {s['config']['steps']} steps × {s['config']['batch']}"
    ]
    width = max(len(name) for name, _ in rows) + 2
    lines += [f"  {name:<{width}}{val}" for name, val in rows]
    if s["cfm_floor_warning"]:
        lines.append(f"  note: {s['cfm_floor_warning']}")
    elif over:
        why = (
            f"over [0, 1] L* is infinite for {s['schedule']} (β̇ infinite at t = 1)"
            if s.get("cfm_floor_infinite_over_0_1")
            else "--t-max"
        )
        lines.append(f"  note: losses, L* and the identity over t in [0, {t_max:g}]: {why}")
    files = ["summary.json", "checkpoint.npz", *s.get("figures", [])]
    lines.append(f"  wrote {', '.join(files)} to {out}")
    return lines


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
