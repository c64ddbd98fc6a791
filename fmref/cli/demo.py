"""``fmref demo``: parse the options, show a progress bar, print the table of the summary.

``fmref demo --guidance`` runs the classifier-free guidance demo instead (its own defaults,
:data:`fmref.demo.GUIDANCE_DEFAULTS`, and its own table).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..demo import DEFAULTS, GUIDANCE_DEFAULTS, SINGULAR_T_MAX, demo_options, run_demo
from ..mixtures import DATASETS
from ..schedules import SCHEDULES
from ..train import OBJECTIVES, StepInfo

#: Options of the guidance demo only.
_GUIDANCE_ONLY = set(GUIDANCE_DEFAULTS) - set(DEFAULTS)


def _default(name: str) -> str:
    d, g = DEFAULTS.get(name), GUIDANCE_DEFAULTS.get(name)
    if name not in DEFAULTS:
        return f"(--guidance only; default {g})"
    if name in GUIDANCE_DEFAULTS and g != d:
        return f"(default {d}; {g} with --guidance)"
    return f"(default {d})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Options left out stay out of args (SUPPRESS), so each demo fills in its own defaults.
    opt: dict[str, Any] = {"default": argparse.SUPPRESS}
    p.add_argument(
        "--guidance",
        action="store_true",
        help="classifier-free guidance: train a label-conditioned MLP with label dropout on "
        "eight_gaussians_classes and compare learned and exact CFG",
    )
    p.add_argument(
        "--data", choices=sorted(DATASETS), help=f"{_default('data')}; not with --guidance", **opt
    )
    p.add_argument("--schedule", choices=sorted(SCHEDULES), help=_default("schedule"), **opt)
    p.add_argument(
        "--polynomial-p",
        type=float,
        help="p >= 1 of --schedule polynomial, α_t = t^p (default 2)",
        **opt,
    )
    p.add_argument(
        "--t-max",
        type=float,
        help="measure the final losses, L* and the identity over t in [0, t_max) (default 1, "
        f"or {SINGULAR_T_MAX} where β̇ is infinite at t = 1, making L* over [0, 1] infinite)",
        **opt,
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="linear (Algorithm 4, the default for --schedule linear), cfm "
        "(Algorithm 3, the default otherwise) or marginal",
        **opt,
    )
    p.add_argument("--steps", type=int, help=f"Adam steps {_default('steps')}", **opt)
    p.add_argument("--batch", type=int, help=f"minibatch size {_default('batch')}", **opt)
    p.add_argument("--width", type=int, help=f"hidden-layer width {_default('width')}", **opt)
    p.add_argument("--depth", type=int, help=f"hidden layers {_default('depth')}", **opt)
    p.add_argument("--lr", type=float, help=f"Adam learning rate {_default('lr')}", **opt)
    p.add_argument("--seed", type=int, help=_default("seed"), **opt)
    p.add_argument("--eval-n", type=int, help=f"draws per estimate {_default('eval_n')}", **opt)
    p.add_argument("--samples", type=int, help=f"ODE samples {_default('samples')}", **opt)
    p.add_argument("--ode-steps", type=int, help=f"RK4 steps {_default('ode_steps')}", **opt)
    p.add_argument(
        "--classes",
        type=int,
        help=f"classes of eight_gaussians_classes {_default('classes')}",
        **opt,
    )
    p.add_argument(
        "--p-uncond", type=float, help=f"label dropout probability {_default('p_uncond')}", **opt
    )
    p.add_argument(
        "--embedding-dim",
        type=int,
        help=f"label embedding width {_default('embedding_dim')}",
        **opt,
    )
    p.add_argument(
        "--guidance-class",
        type=int,
        help=f"the class y guided towards {_default('guidance_class')}",
        **opt,
    )
    p.add_argument(
        "--guidance-weights",
        type=float,
        nargs="+",
        metavar="W",
        help=f"CFG weights w, (1 − w) u + w u_y {_default('guidance_weights')}",
        **opt,
    )
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


def _cfg_row(r: dict[str, Any], key: str) -> str:
    st = r[key]
    freq = " ".join(f"{v:.3f}" for v in st["mode_freq"])
    kl, se = r[f"kl_{key}"], r[f"kl_{key}_stderr"]
    return (
        f"    {key:<8}{kl:8.3f} ± {se:.3f}     {freq:<26}{st['in_class']:7.3f}"
        f"{st['mean_log_p_data_given_y']:13.3f}"
    )


def guidance_report_lines(s: dict[str, Any], out: Path) -> list[str]:
    """Return the table ``fmref demo --guidance`` prints for summary ``s`` written to ``out``."""
    c = s["config"]
    lines = [
        f"fmref demo --guidance: {s['data']}, {s['schedule']}, objective {s['objective']}, "
        f"p_uncond {s['p_uncond']}, MLP {s['model']['hidden']} + label embedding "
        f"{s['model']['embedding_dim']}, {c['steps']} steps × {c['batch']}",
        "  exact yardsticks (n = {}): u^θ(·|y) vs u_t(x|y) on x ~ p_t(·|y); ∅ vs u_t(x)".format(
            s["eval_n"]
        ),
        f"    {'label':<8}{'FM loss':>20}{'relative FM':>22}{'L* floor':>20}{'CFM − FM − L*':>22}",
    ]
    for r in [*s["classes"], s["unconditional"]]:
        name = "∅" if r["label"] is None else f"y = {r['label']}"
        lines.append(
            f"    {name:<8}{_fmt(r['fm_loss'], r['fm_loss_stderr'])}"
            f"{_fmt(r['relative_fm_loss'], r['relative_fm_loss_stderr'])}"
            f"{_fmt(r['cfm_floor'], r['cfm_floor_stderr'])}"
            f"{_fmt(r['cfm_minus_fm_minus_floor'], r['cfm_minus_fm_minus_floor_stderr'])}"
        )
    if s["cfg_training_floor"] is not None:
        lines.append(f"  floor of the CFG training loss: {s['cfg_training_floor']:.5f}")
    weights = " ".join(f"{v:.3f}" for v in s["mode_weights"])
    lines += [
        f"  classifier-free guidance to y = {s['guidance_class']} (p_data(·|y) mode weights "
        f"{weights}; {s['samples']} ODE samples, RK4 {s['ode']['steps']} steps):",
        f"    {'':<8}{'KL(ρ^w ‖ q^w_1) ± se':<21}{'mode frequencies':<26}"
        f"{'in y':>7}{'log p(x|y)':>13}",
    ]
    for r in s["cfg"]:
        lines.append(
            f"  w = {r['w']:g}: learned vs exact CFG field, relative FM loss "
            f"{r['relative_fm_loss']:.5f} ± {r['relative_fm_loss_stderr']:.5f}; "
            f"E|X̃_1 − X_1| {r['flow_map_error']:.3f} ± {r['flow_map_error_stderr']:.3f}"
        )
        lines += [_cfg_row(r, "exact"), _cfg_row(r, "learned")]
    lines.append(
        f"  wall time (s) {s['wall_time_s']:.1f}   (training {s['wall_time_train_s']:.1f})"
    )
    files = ["summary.json", "checkpoint.npz", *s.get("figures", [])]
    lines.append(f"  wrote {', '.join(files)} to {out}")
    return lines


def run(args: argparse.Namespace) -> int:
    names = set(DEFAULTS) | set(GUIDANCE_DEFAULTS)
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if "guidance_weights" in given:
        given["guidance_weights"] = tuple(given["guidance_weights"])
    if args.guidance and "data" in given:
        raise ValueError("--data does not apply to --guidance (it trains on "
                         "eight_gaussians_classes; choose the number of --classes)")  # fmt: skip
    plain_only = set(DEFAULTS) - set(GUIDANCE_DEFAULTS)
    stray = sorted((plain_only if args.guidance else _GUIDANCE_ONLY) & set(given))
    if stray:
        raise ValueError(
            f"{', '.join('--' + k.replace('_', '-') for k in stray)}: "
            + ("not with --guidance" if args.guidance else "only with --guidance")
        )
    opts = demo_options(given, guidance=args.guidance)
    callback, bar = _progress_bar(opts["steps"], not args.no_progress)
    try:
        s = run_demo(
            args.out, plots=not args.no_plots, progress=callback, guidance=args.guidance, **given
        )
    finally:
        if bar is not None:
            bar.close()
    lines = guidance_report_lines if args.guidance else report_lines
    for line in lines(s, args.out):
        print(line)
    return 0
