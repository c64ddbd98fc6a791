"""Records of :mod:`fmref.train`: the validated configuration, evaluations and the result."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, final

import numpy as np

from .losses import LossEstimate

__all__ = ["LR_SCHEDULES", "OBJECTIVES", "Evaluation", "StepInfo", "TrainConfig", "TrainResult"]

OBJECTIVES = ("cfm", "linear", "marginal")
LR_SCHEDULES = ("constant", "cosine")


def check_int(v: Any, name: str, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


def _pos(v: Any, name: str, *, zero_ok: bool = False) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{name} must be a finite number {'>=' if zero_ok else '>'} 0, got {v!r}")


@final
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all validated; bad values raise ValueError).

    steps, batch : optimiser steps and minibatch size (>= 1).
    lr, lr_schedule, warmup : Adam step size (> 0), "constant" or "cosine" decay, warm-up steps.
    weight_decay, clip_norm : Adam's decoupled weight decay (>= 0) and gradient-norm clip.
    objective : "cfm" (Algorithm 3), "linear" (Algorithm 4) or "marginal".
    seed : seeds the training stream (minibatches) and the evaluation stream (yardsticks).
    eval_every, eval_n, floor_n : evaluate fm_loss every so many steps (0: only at the end) on
        eval_n draws; the floor L* once on floor_n draws.
    checkpoint_every : write the checkpoint every so many steps (0: only at the end).
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

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", 1)
        check_int(self.batch, "batch", 1)
        _pos(self.lr, "lr")
        _pos(self.weight_decay, "weight_decay", zero_ok=True)
        if self.clip_norm is not None:
            _pos(self.clip_norm, "clip_norm")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        check_int(self.warmup, "warmup", 0)
        check_int(self.seed, "seed", 0)
        check_int(self.eval_every, "eval_every", 0)
        check_int(self.eval_n, "eval_n", 2)
        check_int(self.floor_n, "floor_n", 2)
        check_int(self.checkpoint_every, "checkpoint_every", 0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
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
