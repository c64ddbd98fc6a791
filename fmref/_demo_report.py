"""Build and format what ``fmref demo`` reports: the summary's measurements and the printed table.

:func:`measure` estimates the losses, the L* identity, log-likelihoods and energy distances of
a trained model; :func:`report_lines` turns the summary into the table the CLI prints.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .losses import cfm_floor, cfm_loss, fm_loss
from .marginals import MarginalPath
from .mlp import MLP

__all__ = ["measure", "report_lines"]


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def measure(
    mp: MarginalPath, model: MLP, res: Any, o: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Measure the trained ``model``; return the summary, its ODE samples and data draws z."""
    from .samplers import sample

    n, seed = o["eval_n"], o["seed"]
    crn = lambda: np.random.default_rng([seed, 3])  # noqa: E731  (same draws for all three)
    fm = fm_loss(model, mp, n=n, rng=crn())
    cfm = cfm_loss(model, mp, n=n, rng=crn())
    floor = cfm_floor(mp, n=n, rng=crn())
    gap = cfm.samples - fm.samples - floor.samples
    m = o["samples"]
    ode = dict(method="rk4", steps=o["ode_steps"])
    gen = sample(model, m, np.random.default_rng([seed, 4]), marginal=mp, **ode)
    ref = sample(mp.vector_field, m, np.random.default_rng([seed, 4]), marginal=mp, **ode)
    z = mp.data.sample(m, rng=np.random.default_rng([seed, 5]))

    def mean_se(a: Any) -> tuple[float, float]:
        a = np.asarray(a, dtype=np.float64)
        return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))

    lp_gen, lp_gen_se = mean_se(mp.data.log_prob(gen.x))
    lp_ref, lp_ref_se = mean_se(mp.data.log_prob(ref.x))
    lp_data, lp_data_se = mean_se(mp.data.log_prob(z))
    from .metrics import energy_distance

    tail = res.losses[-max(1, res.losses.size // 100) :]
    summary = {
        "data": o["data"],
        "schedule": repr(mp.schedule),
        "objective": res.config.objective,
        "model": model.to_config(),
        "n_params": model.n_params,
        "config": asdict(res.config),
        "cfm_loss": cfm.value,
        "cfm_loss_stderr": cfm.stderr,
        # L* from the 10x larger sample drawn once for training (the same value the progress
        # bar and the loss curve show); the common-random-number floor serves the identity.
        "cfm_floor": _finite_or_none(res.floor.value),
        "cfm_floor_stderr": _finite_or_none(res.floor.stderr),
        "cfm_floor_n": res.floor.n,
        "cfm_floor_warning": res.floor.warning,
        "fm_loss": fm.value,
        "fm_loss_stderr": fm.stderr,
        "relative_fm_loss": fm.relative,
        "relative_fm_loss_stderr": fm.relative_stderr,
        "cfm_minus_fm_minus_floor": float(gap.mean()),
        "cfm_minus_fm_minus_floor_stderr": float(gap.std(ddof=1) / math.sqrt(gap.size)),
        "train_loss_last_1pct": float(tail.mean()),
        "eval_n": n,
        "log_p_data_generated": lp_gen,
        "log_p_data_generated_stderr": lp_gen_se,
        "log_p_data_exact_field_ode": lp_ref,
        "log_p_data_exact_field_ode_stderr": lp_ref_se,
        "log_p_data_data": lp_data,
        "log_p_data_data_stderr": lp_data_se,
        "energy_distance_generated": energy_distance(gen.x, z),
        "energy_distance_exact_field_ode": energy_distance(ref.x, z),
        "ode": {**ode, "samples": m, "nfe": gen.nfe},
        "evaluations": [asdict(e) for e in res.evaluations],
    }
    return summary, np.asarray(gen.x), z


def _fmt(v: float | None, se: float | None = None) -> str:
    if v is None:
        return f"{'inf':>12}"
    s = f"{v:12.5f}"
    return s + (f" ± {se:.5f}" if se is not None else "")


def report_lines(s: dict[str, Any], out: Path) -> list[str]:
    """Return the table ``fmref demo`` prints for summary ``s`` written to ``out``."""
    rel = s["relative_fm_loss"]
    rows = [
        ("final CFM loss (Monte Carlo)", _fmt(s["cfm_loss"], s["cfm_loss_stderr"])),
        ("L* irreducible floor", _fmt(s["cfm_floor"], s["cfm_floor_stderr"])),
        ("FM loss (exact u_t)", _fmt(s["fm_loss"], s["fm_loss_stderr"])),
        (
            "relative FM loss",
            _fmt(rel, s["relative_fm_loss_stderr"])
            + ("   (<= 0.10)" if rel <= 0.10 else "   (> 0.10!)"),
        ),
        (
            "CFM − FM − L* (should be ~0)",
            _fmt(s["cfm_minus_fm_minus_floor"], s["cfm_minus_fm_minus_floor_stderr"]),
        ),
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
    lines += [f"  {name:<34}{val}" for name, val in rows]
    if s["cfm_floor_warning"]:
        lines.append(f"  note: {s['cfm_floor_warning']}")
    files = ["summary.json", "checkpoint.npz", *s.get("figures", [])]
    lines.append(f"  wrote {', '.join(files)} to {out}")
    return lines
