"""Train a vector field by flow matching and measure it against the exact answer.

Three objectives, each one minibatch per step with t ~ U[0, 1) from a seeded Generator and
data drawn fresh from p_data:

- ``"cfm"`` (Algorithm 3, any schedule): z ~ p_data, t ~ U[0, 1), ε ~ N(0, I),
  x = α_t z + β_t ε, L(θ) = ||u_t^θ(x) − (α̇_t z + β̇_t ε)||².
- ``"linear"`` (Algorithm 4, the Linear schedule): x = t z + (1 − t) ε,
  L(θ) = ||u_t^θ(x) − (z − ε)||².
- ``"marginal"``: t ~ U[0, 1), x ~ p_t exactly, L(θ) = ||u_t^θ(x) − u_t(x)||² with the exact
  marginal field (possible only because u_t is known in closed form here).

Classifier-free guidance training: with a label-conditioned model (``MLP(n_classes=K)``) and
labelled data, each row carries the label y of the component its z was drawn from
((z, y) ~ p_data), replaced by the null label ∅ with probability ``p_uncond`` (label dropout);
the target is unchanged (α̇_t z + β̇_t ε), so one network learns u_t(x | y) and u_t(x | ∅) =
u_t(x) at once. ``"marginal"`` then draws y ~ π_y, x ~ p_t(· | y) and targets u_t(x | y), or
u_t(x) where the label was dropped. An unlabelled model trains exactly as before, on labelled
data too (the labels are not drawn).

The minibatch loss is the mean over rows of the squared norm summed over d, minimised by Adam.
Yardsticks (fm_loss, relative fm_loss; the floor L* once) are evaluated every ``eval_every``
steps on a fixed evaluation stream, which never touches the training Generator, so checkpoint
and resume reproduce an uninterrupted run bit for bit. For a label-conditioned model they
measure the unconditional field u^θ_t(x | ∅) against u_t(x); the per-class yardsticks are
:func:`fmref.demo.measure_guidance`'s.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, final

import numpy as np

from . import _checkpoint
from ._check import check_choice, check_float, check_int
from ._xp import device, from_numpy, namespace
from .losses import LossEstimate, cfm_floor, fm_loss
from .marginals import MarginalPath
from .schedules import Linear

__all__ = [
    "LR_SCHEDULES",
    "OBJECTIVES",
    "Evaluation",
    "StepInfo",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "make_optimizer",
    "train",
]

OBJECTIVES = ("cfm", "linear", "marginal")
LR_SCHEDULES = ("constant", "cosine")

#: Integer fields of :class:`TrainConfig` and their least value.
_INT_FIELDS = {
    "steps": 1,
    "batch": 1,
    "warmup": 0,
    "seed": 0,
    "eval_every": 0,
    "eval_n": 2,
    "floor_n": 2,
    "checkpoint_every": 0,
}


@final
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all validated: a wrong type raises TypeError, a bad
    value ValueError).

    steps, batch : optimiser steps and minibatch size (>= 1).
    lr, lr_schedule, warmup : Adam step size (> 0), "constant" or "cosine" decay, warm-up steps.
    weight_decay, clip_norm : Adam's decoupled weight decay (>= 0) and gradient-norm clip.
    objective : "cfm" (Algorithm 3), "linear" (Algorithm 4) or "marginal".
    seed : seeds the training stream (minibatches) and the evaluation stream (yardsticks).
    eval_every, eval_n, floor_n : evaluate fm_loss every so many steps (0: only at the end) on
        eval_n draws; the floor L* once on floor_n draws.
    checkpoint_every : write the checkpoint every so many steps (0: only at the end).
    p_uncond : label dropout, the probability in [0, 1] that a row's label is replaced by the
        null label (classifier-free guidance training; needs a label-conditioned model).
    """

    steps: int = 2000
    batch: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup: int = 0
    weight_decay: float = 0.0
    clip_norm: float | None = None
    objective: str = "cfm"
    seed: int = 0
    eval_every: int = 0
    eval_n: int = 4096
    floor_n: int = 16384
    checkpoint_every: int = 0
    p_uncond: float = 0.0

    def __post_init__(self) -> None:
        # NumPy scalars are accepted and stored as Python ones, so configs compare and
        # serialise alike however they were built.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name, low in _INT_FIELDS.items():
            put(name, check_int(getattr(self, name), name, low=low))
        put("lr", check_float(self.lr, "lr", low=0.0, low_open=True))
        put("weight_decay", check_float(self.weight_decay, "weight_decay", low=0.0))
        put("p_uncond", check_float(self.p_uncond, "p_uncond", low=0.0, high=1.0))
        if self.clip_norm is not None:
            put("clip_norm", check_float(self.clip_norm, "clip_norm", low=0.0, low_open=True))
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.objective, "objective", OBJECTIVES)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        # Checkpoints written before label dropout existed lack p_uncond (then 0).
        if not isinstance(d, dict) or set(d) not in (names, names - {"p_uncond"}):
            raise ValueError(f"a TrainConfig needs exactly the keys {sorted(names)}")
        return cls(**d)


@final
@dataclass(frozen=True)
class Evaluation:
    """Exact yardsticks of the model after ``step`` optimiser steps (same draws every time)."""

    step: int
    fm_loss: float
    fm_loss_stderr: float
    relative_fm_loss: float
    relative_fm_loss_stderr: float


@final
@dataclass(frozen=True)
class StepInfo:
    """What the progress callback receives after each step (``evaluation`` when one ran)."""

    step: int
    steps: int
    loss: float
    floor: float
    evaluation: Evaluation | None


@final
@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model, optimizer : the trained model and its Adam state (both updated in place).
    config : the TrainConfig.
    losses : (steps,) float64 minibatch loss of every step since step 0 (resumed runs included).
    evaluations : yardsticks, in step order (the last one after the final step).
    floor : L* = E[c_t² tr Cov(z|x)] (:func:`fmref.losses.cfm_floor`), ``inf`` with a warning
        for schedules whose β̇ is infinite at t = 1.
    wall_time : seconds spent in this call; ``start_step``: the step it resumed from (0 if fresh).
    checkpoint : path of the last checkpoint written, or None.
    """

    model: Any
    optimizer: Any
    config: TrainConfig
    losses: np.ndarray
    evaluations: tuple[Evaluation, ...]
    floor: LossEstimate
    wall_time: float
    start_step: int
    checkpoint: Path | None

    @property
    def final(self) -> Evaluation:
        return self.evaluations[-1]


#: Config fields that may change between a checkpoint and its resumption (they do not alter
#: the training trajectory; ``steps`` only with the constant learning rate, see
#: ``_checkpoint.check_resume_steps``).
_RESUMABLE = {"steps", "eval_every", "eval_n", "floor_n", "checkpoint_every"}


def make_optimizer(model: Any, config: TrainConfig) -> Any:
    """Build the Adam optimiser of ``config`` over ``model.params``."""
    from .optim import Adam, cosine_decay

    sched = cosine_decay(config.steps, warmup=config.warmup)
    return Adam(
        model.params,
        lr=config.lr,
        weight_decay=config.weight_decay,
        clip_norm=config.clip_norm,
        schedule=sched if config.lr_schedule == "cosine" else None,
    )


def _minibatch(
    objective: str, marginal: MarginalPath, g: np.random.Generator, batch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one minibatch (x, t, target) in float64 NumPy, in the lecture's order."""
    if objective == "marginal":
        t = g.random(batch)
        x = marginal.sample(batch, t, rng=g)
        return x, t, np.asarray(marginal.vector_field(x, t))
    # Algorithm 3; Algorithm 4 ("linear") is its Linear case, x = t z + (1 − t) ε, target z − ε
    # (train() checks the schedule), and Linear's α̇ = 1, β̇ = −1 give those bit for bit.
    z = marginal.data.sample(batch, rng=g)
    t = g.random(batch)
    ps = marginal.path.draw(z, t, rng=g)
    return ps.x, t, ps.target


def _labelled_minibatch(
    objective: str,
    marginal: MarginalPath,
    g: np.random.Generator,
    batch: int,
    p_uncond: float,
    null: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one CFG minibatch (x, t, target, y): (z, y) ~ p_data, y → ∅ with prob. p_uncond."""
    data = marginal.data
    if objective == "marginal":
        t = g.random(batch)
        y = g.choice(data.classes, size=batch, p=data.class_weights())
        drop = g.random(batch) < p_uncond
        x = np.asarray(marginal.sample(batch, t, rng=g, y=y))
        # A dropped label leaves x ~ p_t(· | y) with y ~ π_y, i.e. x ~ p_t: target u_t(x).
        u = np.asarray(marginal.vector_field(x, t))
        target = np.where(drop[:, None], u, np.asarray(marginal.vector_field(x, t, y=y)))
        return x, t, target, np.where(drop, null, y)
    z, comp = data.sample(batch, rng=g, return_components=True)
    drop = g.random(batch) < p_uncond
    t = g.random(batch)
    ps = marginal.path.draw(z, t, rng=g)
    return ps.x, t, ps.target, np.where(drop, null, np.asarray(data.labels)[comp])


def _check_labels(model: Any, marginal: MarginalPath, config: TrainConfig) -> int | None:
    """Return the model's null label when it trains with labels, else None (checked)."""
    k = getattr(model, "n_classes", None)
    if k is None:
        if config.p_uncond:
            raise ValueError("p_uncond: label dropout needs a label-conditioned model (n_classes)")
        return None
    labels = marginal.data.labels
    if labels is None:
        raise ValueError("marginal: a label-conditioned model needs labelled data")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(
            f"marginal: the data's labels {marginal.data.classes.tolist()} must lie in "
            f"[0, {k}) for a model with n_classes={k}"
        )
    return int(k)


def _describe(marginal: MarginalPath) -> dict[str, Any]:
    d = marginal.data
    out = {
        "schedule": repr(marginal.schedule),
        "weights": d.weights.tolist(),
        "means": d.means.tolist(),
        "covs": d.covs.tolist(),
    }
    if d.labels is not None:  # unlabelled checkpoints keep their old description
        out["labels"] = d.labels.tolist()
    return out


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (a ValueError for a corrupt or foreign file).

    Returns a dict with ``step``, ``config`` (TrainConfig), ``model_config``, ``model`` (state
    dict), ``optimizer`` (state dict), ``rng_state``, ``losses``, ``evaluations``, ``marginal``.
    """
    ck = _checkpoint.load(path)
    extra = ck.get("extra")
    if not isinstance(extra, dict) or "losses" not in extra:
        raise ValueError(f"{str(path)!r} is not a valid fmref checkpoint: no loss history")
    try:
        ck["config"] = TrainConfig.from_dict(ck["config"])
        ck["losses"] = np.asarray(extra["losses"], dtype=np.float64)
        ck["evaluations"] = tuple(Evaluation(**e) for e in ck.get("evaluations", []))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{str(path)!r} is not a valid fmref checkpoint: {exc}") from None
    if not isinstance(ck["step"], int) or ck["losses"].shape != (ck["step"],):
        raise ValueError(f"{str(path)!r} is not a valid fmref checkpoint: step/loss mismatch")
    return ck


def _save(
    path: Path,
    step: int,
    model: Any,
    opt: Any,
    g: Any,
    config: TrainConfig,
    marginal: MarginalPath,
    losses: list[float],
    evals: list[Evaluation],
) -> None:
    meta = {
        "step": step,
        "config": asdict(config),
        "model_config": model.to_config(),
        "rng_state": g.bit_generator.state,
        "marginal": _describe(marginal),
        "evaluations": [asdict(e) for e in evals],
    }
    states = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "extra": {"losses": np.asarray(losses, dtype=np.float64)},
    }
    _checkpoint.save(path, meta, states)


def _resume(path: Any, model: Any, marginal: MarginalPath, config: TrainConfig) -> Any:
    ck = load_checkpoint(path)
    old: TrainConfig = ck["config"]
    _checkpoint.check_resume_steps(old.steps, config.steps, config.lr_schedule)
    diff = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in _RESUMABLE and getattr(old, f.name) != getattr(config, f.name)
    ]
    if diff:
        raise ValueError(f"resume: config differs from the checkpoint's in {diff}")
    if ck["model_config"] != model.to_config():
        raise ValueError(f"resume: model {model.to_config()} != checkpoint {ck['model_config']}")
    if ck.get("marginal") != _describe(marginal):
        raise ValueError("resume: the checkpoint was written for another data set or schedule")
    if ck["step"] > config.steps:
        raise ValueError(f"resume: checkpoint is at step {ck['step']} > steps={config.steps}")
    return ck


def train(
    model: Any,
    marginal: MarginalPath,
    config: TrainConfig | None = None,
    *,
    callback: Callable[[StepInfo], None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``model`` (an :class:`fmref.mlp.MLP`) on ``marginal`` by ``config.objective``.

    ``checkpoint`` is written atomically every ``checkpoint_every`` steps and at the end (a
    write killed midway leaves the previous checkpoint whole and a temporary
    ``.<name>.fmref-tmp.<host>.<pid>.<random>`` that the next write removes);
    ``resume`` loads a checkpoint (parameters, Adam state, step, RNG state, history) and
    continues exactly where it stopped; the config must be the checkpoint's except for
    ``eval_every``, ``eval_n``, ``floor_n``, ``checkpoint_every`` and ``steps``, and ``steps``
    may change only with ``lr_schedule="constant"`` (the cosine schedule is laid out over
    ``steps``; otherwise a ValueError). ``stop_at`` ends early after that step (as if
    interrupted). A non-finite loss raises ValueError naming the step before the update is
    applied, so the model and the last checkpoint stay at the last good state.

    A label-conditioned ``model`` (``n_classes`` = K) trains with the labels of the data
    (which must lie in [0, K)) and label dropout ``config.p_uncond`` (CFG training); a
    ValueError for unlabelled data, or for ``p_uncond > 0`` with an unlabelled model.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    if config.objective == "linear" and not isinstance(marginal.schedule, Linear):
        raise ValueError(
            f"objective 'linear' (Algorithm 4) needs the Linear schedule, got "
            f"{marginal.schedule!r}; use 'cfm' (Algorithm 3)"
        )
    if stop_at is not None:
        check_int(stop_at, "stop_at", low=1)
    null = _check_labels(model, marginal, config)
    start = time.perf_counter()
    like = model.params[0]
    xp = namespace(like)
    put = lambda a: from_numpy(a, xp, device(like), like.dtype)  # noqa: E731
    eval_stream = [config.seed, 1]

    losses: list[float] = []
    evals: list[Evaluation] = []
    step = 0
    if resume is not None:
        ck = _resume(resume, model, marginal, config)
        model.load_state_dict(ck["model"])
        opt = make_optimizer(model, config)
        opt.load_state_dict(ck["optimizer"])
        g = _checkpoint.rng_from_state(ck["rng_state"])
        step, losses, evals = ck["step"], ck["losses"].tolist(), list(ck["evaluations"])
    else:
        opt = make_optimizer(model, config)
        g = np.random.default_rng([config.seed, 0])
    floor = cfm_floor(marginal, n=config.floor_n, rng=np.random.default_rng([config.seed, 2]))

    def evaluate(at: int) -> Evaluation:
        est = fm_loss(
            model, marginal, n=config.eval_n, rng=np.random.default_rng(eval_stream), like=like
        )
        rel, rel_se = float(est.relative or 0.0), float(est.relative_stderr or 0.0)
        return Evaluation(at, est.value, est.stderr, rel, rel_se)

    path = None if checkpoint is None else Path(checkpoint)
    last = config.steps if stop_at is None else min(stop_at, config.steps)
    while step < last:
        if null is None:
            x, t, target = _minibatch(config.objective, marginal, g, config.batch)
            loss, grads = model.loss_and_grad(put(x), put(t), put(target))
        else:
            x, t, target, y = _labelled_minibatch(
                config.objective, marginal, g, config.batch, config.p_uncond, null
            )
            loss, grads = model.loss_and_grad(put(x), put(t), put(target), y=y)
        if not math.isfinite(loss):
            kept = f"; the last good checkpoint is {str(path)!r}" if path and path.exists() else ""
            raise ValueError(f"non-finite training loss {loss} at step {step + 1}{kept}")
        try:
            opt.step(grads)  # refuses non-finite gradients before touching any parameter
        except ValueError as exc:
            raise ValueError(f"step {step + 1}: {exc}") from None
        step += 1
        losses.append(loss)
        ev = None
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            ev = evaluate(step)
            evals.append(ev)
        if path is not None and (
            step == last or (config.checkpoint_every and step % config.checkpoint_every == 0)
        ):
            _save(path, step, model, opt, g, config, marginal, losses, evals)
        if callback is not None:
            callback(StepInfo(step, config.steps, loss, floor.value, ev))
    if not evals or evals[-1].step != step:
        evals.append(evaluate(step))
    return TrainResult(
        model=model,
        optimizer=opt,
        config=config,
        losses=np.asarray(losses, dtype=np.float64),
        evaluations=tuple(evals),
        floor=floor,
        wall_time=time.perf_counter() - start,
        start_step=0 if resume is None else int(ck["step"]),
        checkpoint=path,
    )
