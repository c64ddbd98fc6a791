"""The demo: train the hand-written MLP by flow matching on a 2-D mixture, then measure it exactly.

With the :data:`DEFAULTS`: eight Gaussians, the Linear schedule, Algorithm 4 (target z − ε), an
MLP with three hidden layers of 128, 20 000 Adam steps of 256 (about a minute on 2 CPU cores).
:func:`run_demo` writes ``summary.json``, ``checkpoint.npz`` and five PNG figures and returns the
summary: the losses and the L* identity by common random numbers, log-likelihoods and energy
distances of ODE samples (:func:`measure`). It prints nothing; ``fmref demo``
(:mod:`fmref.cli.demo`) is the command line around it.

``run_demo(guidance=True)`` (``fmref demo --guidance``) is classifier-free guidance end to end,
with :data:`GUIDANCE_DEFAULTS`: a label-conditioned MLP trained with label dropout on
``eight_gaussians_classes``, then :func:`measure_guidance`: the exact yardsticks per class and
for the unconditional field, and the learned CFG field against the exact one at several w.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import atomic_write
from .losses import cfm_floor, cfm_loss, fm_loss
from .marginals import MarginalPath
from .mixtures import DATASETS, eight_gaussians_classes
from .mlp import MLP, GuidedMLP
from .schedules import SCHEDULES, Linear, Polynomial, Schedule
from .train import StepInfo, TrainConfig, train

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
    # p of --schedule polynomial (None: Polynomial's own default, 2).
    "polynomial_p": None,
    # Losses over t ∈ [0, t_max); None: 1, or 0.99 where β̇ is infinite at t = 1 (L* infinite).
    "t_max": None,
}
#: t_max of the losses where L* over [0, 1] is infinite because β̇ is infinite at t = 1.
SINGULAR_T_MAX = 0.99
#: The embedded default of ``fmref demo --guidance`` (measured: see docs/guidance.md).
GUIDANCE_DEFAULTS: dict[str, Any] = {
    "classes": 2,
    "schedule": "linear",
    "objective": None,
    "steps": 6000,
    "batch": 256,
    "width": 64,
    "depth": 3,
    "lr": 2e-3,
    "seed": 0,
    "eval_n": 10000,
    "samples": 500,
    "ode_steps": 100,
    "p_uncond": 0.2,
    "embedding_dim": 8,
    "guidance_class": 0,
    "guidance_weights": (1.0, 2.0, 4.0),
}
GUIDANCE_FIGURES = ("guidance.png",)
FIGURES = (
    "conditional_path.png",
    "marginal_path.png",
    "vector_fields.png",
    "samples.png",
    "loss_curve.png",
)


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


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_number(v: Any, name: str, low: float, high: float = math.inf) -> None:
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
    if not ok or not math.isfinite(v) or not low <= v <= high:
        raise ValueError(f"{_flag(name)} must be a finite number in [{low}, {high}], got {v!r}")


def _check_options(o: dict[str, Any]) -> None:
    ints = {
        "steps": 1,
        "batch": 1,
        "width": 1,
        "depth": 1,
        "eval_n": 2,
        "samples": 1,
        "seed": 0,
        "ode_steps": 1,
    }
    if "p_uncond" in o:  # the guidance demo
        ints.update(samples=2, classes=1, embedding_dim=1, guidance_class=0)
    for name, low in ints.items():
        v = o[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{_flag(name)} must be an int >= {low}, got {v!r}")
    lr = o["lr"]
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"--lr must be a finite number > 0, got {lr!r}")
    p, t_max = o.get("polynomial_p"), o.get("t_max")
    if p is not None:
        if o.get("schedule") != "polynomial":
            raise ValueError("--polynomial-p applies only to --schedule polynomial")
        # p < 1: α̇ = p t^(p−1) is infinite at t = 0, where every ODE sample starts.
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p < math.inf:
            raise ValueError(
                f"--polynomial-p must be a finite number >= 1 (for p < 1, α̇ is infinite at "
                f"t = 0, where the ODE samples start), got {p!r}"
            )
    if t_max is not None and (
        isinstance(t_max, bool) or not isinstance(t_max, (int, float)) or not 0 < t_max <= 1
    ):
        raise ValueError(f"--t-max must be a number in (0, 1], got {t_max!r}")

    if "p_uncond" not in o:
        return
    _check_number(o["p_uncond"], "p_uncond", 0.0, 1.0)
    if o["classes"] not in (2, 4, 8):
        raise ValueError(f"--classes must be 2, 4 or 8, got {o['classes']!r}")
    if o["guidance_class"] >= o["classes"]:
        raise ValueError(
            f"--guidance-class must be < --classes = {o['classes']}, got {o['guidance_class']}"
        )
    ws = o["guidance_weights"]
    if isinstance(ws, (str, bytes)) or not isinstance(ws, (list, tuple)) or not ws:
        raise ValueError(f"--guidance-weights must be a nonempty list of numbers, got {ws!r}")
    for w in ws:
        _check_number(w, "guidance_weights", 0.0)


def make_marginal(data: str, schedule: str, *, polynomial_p: float | None = None) -> MarginalPath:
    """Return the exact marginal path of a named data set and schedule (the CLI's names)."""
    if data not in DATASETS or schedule not in SCHEDULES:
        raise ValueError(f"data must be in {sorted(DATASETS)}, schedule in {sorted(SCHEDULES)}")
    sched: Schedule = (
        Polynomial(polynomial_p)
        if schedule == "polynomial" and polynomial_p is not None
        else SCHEDULES[schedule]()
    )
    return MarginalPath(DATASETS[data](), sched)


def default_t_max(schedule: Schedule) -> float:
    """Return 1, or :data:`SINGULAR_T_MAX` where β̇ is infinite at t = 1 (L* infinite)."""
    return SINGULAR_T_MAX if schedule.singular_at_one else 1.0


def demo_options(options: dict[str, Any], *, guidance: bool = False) -> dict[str, Any]:
    """Return the demo's options: ``options`` over the defaults, checked (TypeError for an
    unknown name, ValueError naming the command-line flag for a bad value)."""
    defaults = GUIDANCE_DEFAULTS if guidance else DEFAULTS
    unknown = set(options) - set(defaults)
    if unknown:
        which = "guidance demo" if guidance else "demo"
        raise TypeError(f"unknown {which} options {sorted(unknown)}")
    o = {**defaults, **options}
    _check_options(o)
    return o


def _train_config(o: dict[str, Any], mp: MarginalPath, **extra: Any) -> TrainConfig:
    """The demos' training setup: Algorithm 4 for Linear unless ``objective`` says otherwise,
    20 periodic evaluations."""
    return TrainConfig(
        steps=o["steps"],
        batch=o["batch"],
        lr=o["lr"],
        objective=o["objective"] or ("linear" if isinstance(mp.schedule, Linear) else "cfm"),
        seed=o["seed"],
        eval_every=max(1, o["steps"] // 20),
        eval_n=4096,
        **extra,
    )


def _need_matplotlib(plots: bool) -> None:
    """Refuse before training: a missing library must not cost the user the run."""
    if not plots:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            'the demo\'s figures need matplotlib: pip install "fmref[demo]" (or pass --no-plots)'
        ) from None


def run_demo(
    out: str | os.PathLike[str] = "fmref-out",
    *,
    plots: bool = True,
    progress: Callable[[StepInfo], None] | None = None,
    guidance: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Run the demo and write its files to ``out``; return the summary (no printing).

    ``options`` override :data:`DEFAULTS` (data, schedule, objective, steps, batch, width,
    depth, lr, seed, eval_n, samples, ode_steps, polynomial_p, t_max). The final losses, L*
    and the identity E L_CFM = L_FM + L* are measured over t ∈ [0, t_max). With
    ``guidance=True`` they override :data:`GUIDANCE_DEFAULTS` instead (no ``data``:
    ``eight_gaussians_classes(classes)``; besides ``p_uncond``, ``embedding_dim``,
    ``guidance_class`` and ``guidance_weights``) and the run is :func:`run_guidance_demo`'s.

    Raises ImportError naming ``pip install "fmref[demo]"`` before training when ``plots`` is
    true and matplotlib is missing.
    """
    if guidance:
        return run_guidance_demo(out, plots=plots, progress=progress, **options)
    o = demo_options(options)
    mp = make_marginal(o["data"], o["schedule"], polynomial_p=o["polynomial_p"])
    if o["t_max"] is None:
        o["t_max"] = default_t_max(mp.schedule)
    _need_matplotlib(plots)
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = o["seed"]
    config = _train_config(o, mp, floor_n=10 * o["eval_n"])
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


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def measure(
    mp: MarginalPath, model: MLP, res: Any, o: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Measure the trained ``model``; return the summary, its ODE samples and data draws z."""
    from .samplers import sample

    n, seed, t_max = o["eval_n"], o["seed"], float(o.get("t_max") or 1.0)
    crn = lambda: np.random.default_rng([seed, 3])  # noqa: E731  (same draws for all three)
    fm = fm_loss(model, mp, n=n, rng=crn(), t_max=t_max)
    cfm = cfm_loss(model, mp, n=n, rng=crn(), t_max=t_max)
    floor = cfm_floor(mp, n=n, rng=crn(), t_max=t_max)
    gap = cfm.samples - fm.samples - floor.samples
    # Where L* is infinite the per-draw gap has infinite variance: no test (None).
    gap_mean, gap_se = (
        (float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(gap.size)))
        if floor.finite
        else (None, None)
    )
    # Over [0, 1], L* from the 10x larger sample drawn once for training (the value the
    # progress bar and the loss curve show); over [0, t_max) the common-random-number one.
    best_floor = res.floor if t_max == 1.0 else floor
    m = o["samples"]
    ode = dict(method="rk4", steps=o["ode_steps"])
    gen = sample(model, m, rng=np.random.default_rng([seed, 4]), marginal=mp, **ode)
    ref = sample(mp.vector_field, m, rng=np.random.default_rng([seed, 4]), marginal=mp, **ode)
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
        "t_max": t_max,
        "cfm_floor_infinite_over_0_1": not res.floor.finite,
        "cfm_floor": _finite_or_none(best_floor.value),
        "cfm_floor_stderr": _finite_or_none(best_floor.stderr),
        "cfm_floor_n": best_floor.n,
        "cfm_floor_warning": best_floor.warning,
        "fm_loss": fm.value,
        "fm_loss_stderr": fm.stderr,
        "relative_fm_loss": fm.relative,
        "relative_fm_loss_stderr": fm.relative_stderr,
        "cfm_minus_fm_minus_floor": gap_mean,
        "cfm_minus_fm_minus_floor_stderr": gap_se,
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
        mp,
        z,
        gen_x,
        out / FIGURES[3],
        title=f"ODE samples of the trained MLP (RK4, {o['ode_steps']} steps)",
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


# ---- classifier-free guidance ----------------------------------------------------------------
def run_guidance_demo(
    out: str | os.PathLike[str] = "fmref-out",
    *,
    plots: bool = True,
    progress: Callable[[StepInfo], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a label-conditioned MLP with label dropout, measure it exactly, write its files.

    ``options`` override :data:`GUIDANCE_DEFAULTS`. Writes ``summary.json``,
    ``checkpoint.npz`` and (with ``plots``) ``guidance.png``; returns the summary.
    """
    o = demo_options(options, guidance=True)
    _need_matplotlib(plots)
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = eight_gaussians_classes(o["classes"])
    mp = MarginalPath(data, SCHEDULES[o["schedule"]]())
    seed = o["seed"]
    config = _train_config(o, mp, floor_n=o["eval_n"], p_uncond=o["p_uncond"])
    model = MLP(
        mp.dim,
        (o["width"],) * o["depth"],
        n_classes=o["classes"],
        embedding_dim=o["embedding_dim"],
        rng=np.random.default_rng([seed, 10]),
    )
    with _one_blas_thread():
        res = train(model, mp, config, callback=progress, checkpoint=out / "checkpoint.npz")
        summary, rows = measure_guidance(mp, model, o)
        summary["objective"] = res.config.objective
        summary["config"] = asdict(res.config)
        summary["model"] = model.to_config()
        summary["n_params"] = model.n_params
        summary["evaluations"] = [asdict(e) for e in res.evaluations]
        summary["wall_time_train_s"] = res.wall_time
        if plots:
            from .plotting import plot_guidance

            y = o["guidance_class"]
            ref = data.given(y).sample(o["samples"], rng=np.random.default_rng([seed, 7]))
            plot_guidance(mp, y, rows, ref, out / GUIDANCE_FIGURES[0])
            summary["figures"] = list(GUIDANCE_FIGURES)
    summary["wall_time_s"] = time.perf_counter() - start
    _write_json(out / "summary.json", summary)
    return summary


def _yardsticks(field: Any, mp: MarginalPath, n: int, seed: int, label: int | None) -> dict:
    """FM loss, L* and the identity E L_CFM = L_FM + L* (common random numbers) on ``mp``."""
    crn = lambda: np.random.default_rng([seed, 3, 0 if label is None else 1 + label])  # noqa: E731
    fm = fm_loss(field, mp, n=n, rng=crn())
    cfm = cfm_loss(field, mp, n=n, rng=crn())
    floor = cfm_floor(mp, n=n, rng=crn())
    gap = cfm.samples - fm.samples - floor.samples
    return {
        "label": label,
        "fm_loss": fm.value,
        "fm_loss_stderr": fm.stderr,
        "relative_fm_loss": fm.relative,
        "relative_fm_loss_stderr": fm.relative_stderr,
        "cfm_loss": cfm.value,
        "cfm_loss_stderr": cfm.stderr,
        "cfm_floor": _finite_or_none(floor.value),
        "cfm_floor_stderr": _finite_or_none(floor.stderr),
        "cfm_floor_warning": floor.warning,
        "cfm_minus_fm_minus_floor": float(gap.mean()),
        "cfm_minus_fm_minus_floor_stderr": float(gap.std(ddof=1) / math.sqrt(gap.size)),
    }


def _cfg_stats(mp: MarginalPath, y: int, x: np.ndarray) -> dict[str, Any]:
    """Mode weights within class y, the share classified as y, mean log p_data(x | y)."""
    cond = mp.data.given(y)
    comp = np.argmax(np.asarray(cond.responsibilities(x)), axis=1)
    in_class = np.asarray(mp.classifier_log_prob(x, 1.0, y=y)) > math.log(0.5)
    lp = np.asarray(cond.log_prob(x), dtype=np.float64)
    return {
        "mode_freq": (np.bincount(comp, minlength=cond.n_components) / x.shape[0]).tolist(),
        "in_class": float(in_class.mean()),
        "mean_log_p_data_given_y": float(lp.mean()),
        "mean_log_p_data_given_y_stderr": float(lp.std(ddof=1) / math.sqrt(lp.size)),
    }


def measure_guidance(
    mp: MarginalPath, model: MLP, o: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure a label-conditioned ``model`` on labelled ``mp`` exactly.

    Yardsticks (:func:`fmref.losses.fm_loss`, :func:`~fmref.losses.cfm_loss`,
    :func:`~fmref.losses.cfm_floor`) for each class y on ``MarginalPath(data.given(y), path)``
    (u^θ(· | y) against u_t(x | y), x ~ p_t(· | y); L*_y the class's floor) and for the
    null label on ``mp`` (u^θ(· | ∅) against u_t(x)); the floor of the CFG objective,
    p_uncond L* + (1 − p_uncond) Σ_y π_y L*_y. Then for class ``o["guidance_class"]`` and each
    w of ``o["guidance_weights"]``: the relative FM loss of the learned CFG field
    (:class:`fmref.mlp.GuidedMLP`) against the exact :class:`fmref.guidance.CFG` field on
    x ~ p_t(· | y); CFG ODE samples (RK4, ``ode_steps``) of both from the same p_init draws,
    their mode weights within the class, share classified as y (p_data(y | x) > ½), mean
    log p_data(x | y), and the flow-map error E|X̃_1 − X_1| between the two from the same
    X_0; KL(ρ^w ‖ q^w_1) of the exact CFG ODE (:func:`fmref.guidance.cfg_gap`)
    and of the learned one (its exact log-density through the likelihood ODE, RK4).
    Returns the summary and one row per w with the sample arrays (for the figure).
    """
    from .guidance import CFG, Tilted, cfg_gap
    from .likelihood import log_likelihood
    from .samplers import sample

    n, seed, data = o["eval_n"], o["seed"], mp.data
    classes = [int(c) for c in data.classes]
    per_class = [
        _yardsticks(
            lambda x, t, c=c: model(x, t, y=c), MarginalPath(data.given(c), mp.path), n, seed, c
        )
        for c in classes
    ]
    uncond = _yardsticks(model, mp, n, seed, None)
    pi = data.class_weights()
    floors = [r["cfm_floor"] for r in per_class]
    cfg_floor = None
    if uncond["cfm_floor"] is not None and None not in floors:
        p = o["p_uncond"]
        cfg_floor = p * uncond["cfm_floor"] + (1 - p) * float(np.dot(pi, floors))

    y, m = o["guidance_class"], o["samples"]
    cond = MarginalPath(data.given(y), mp.path)
    ode = dict(method="rk4", steps=o["ode_steps"])
    rows = []
    for w in o["guidance_weights"]:
        w = float(w)
        learned, exact = GuidedMLP(model, y, w), CFG(mp, y, w)
        rel = fm_loss(
            learned.vector_field,
            cond,
            n=n,
            rng=np.random.default_rng([seed, 8]),
            reference=exact.vector_field,
        )
        draw = lambda: np.random.default_rng([seed, 9])  # noqa: E731  (same p_init draws)
        x_l = np.asarray(sample(learned.vector_field, m, rng=draw(), dim=mp.dim, **ode).x)
        x_e = np.asarray(sample(exact.vector_field, m, rng=draw(), dim=mp.dim, **ode).x)
        gap = cfg_gap(mp, y=y, w=w, n=m, rng=draw())
        tilted = Tilted(mp, y, w)
        log_q = np.asarray(tilted.log_prob(x_l, 1.0, log_normaliser=gap.log_normaliser))
        log_rho = np.asarray(log_likelihood(learned.vector_field, x_l, **ode).log_prob)
        kl = log_rho - log_q
        dist = np.linalg.norm(x_l - x_e, axis=1)  # both flows start from the same x0
        rows.append(
            {
                "w": w,
                "relative_fm_loss": rel.relative,
                "relative_fm_loss_stderr": rel.relative_stderr,
                "kl_exact": gap.kl,
                "kl_exact_stderr": gap.kl_stderr,
                "kl_learned": float(kl.mean()),
                "kl_learned_stderr": float(kl.std(ddof=1) / math.sqrt(m)),
                "log_normaliser": gap.log_normaliser.value,
                "exact": _cfg_stats(mp, y, x_e),
                "learned": _cfg_stats(mp, y, x_l),
                "flow_map_error": float(dist.mean()),
                "flow_map_error_stderr": float(dist.std(ddof=1) / math.sqrt(m)),
                "x_learned": x_l,
                "x_exact": x_e,
            }
        )
    summary = {
        "data": f"eight_gaussians_classes({o['classes']})",
        "schedule": repr(mp.schedule),
        "p_uncond": o["p_uncond"],
        "class_weights": pi.tolist(),
        "eval_n": n,
        "classes": per_class,
        "unconditional": uncond,
        "cfg_training_floor": cfg_floor,
        "guidance_class": y,
        "mode_weights": data.given(y).weights.tolist(),
        "samples": m,
        "ode": ode,
        "cfg": [{k: v for k, v in r.items() if not k.startswith("x_")} for r in rows],
    }
    return summary, rows
