"""Adam written by hand: decoupled weight decay (AdamW), global-norm clipping, lr schedules.

At step k = 1, 2, ... with gradient g (after clipping) and learning rate η_k = lr · schedule(k − 1):

    m ← β1 m + (1 − β1) g,           v ← β2 v + (1 − β2) g²,
    θ ← θ (1 − η_k λ),                                (decoupled weight decay λ, AdamW)
    θ ← θ − η_k m̂ / (√v̂ + ε),        m̂ = m / (1 − β1^k),  v̂ = v / (1 − β2^k).

This is ``torch.optim.Adam`` for λ = 0 and ``torch.optim.AdamW`` otherwise. Clipping rescales
the whole gradient by c / ||g|| when its global norm ||g|| (over all parameters) exceeds c.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import numpy as np

from ._check import check_callable, check_float, check_int
from ._checkpoint import check_float_states
from ._xp import Array, device, from_numpy, namespace, require_mutable, to_numpy

__all__ = ["Adam", "cosine_decay", "cosine_schedule"]


def cosine_decay(total_steps: int, *, warmup: int = 0) -> Callable[[int], float]:
    """Return the lr multiplier k ↦ s(k) for step index k = 0, 1, ... (k steps already taken).

    Linear warm-up s(k) = (k + 1)/warmup for k < warmup, then cosine decay
    s(k) = ½ (1 + cos(π (k − warmup)/(total_steps − warmup))) down to 0 at k = total_steps
    (and 0 after).
    """
    total_steps = check_int(total_steps, "total_steps", low=1)
    warmup = check_int(warmup, "warmup", low=0, high=total_steps - 1)

    def schedule(k: int) -> float:
        if k < warmup:
            return (k + 1) / warmup
        frac = min(1.0, (k - warmup) / (total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    return schedule


def cosine_schedule(total_steps: int, warmup: int = 0) -> Callable[[int], float]:
    """Return :func:`cosine_decay` (deprecated name, kept for one release).

    Renamed because it clashed with the noise schedule :class:`fmref.schedules.Cosine`.
    """
    warnings.warn(
        "fmref.optim.cosine_schedule is deprecated; use fmref.optim.cosine_decay",
        DeprecationWarning,
        stacklevel=2,
    )
    return cosine_decay(total_steps, warmup=warmup)


def _finite(v: Any, name: str, low: float, *, strict: bool) -> float:
    return check_float(v, name, low=low, low_open=strict)


@final
class Adam:
    """Adam / AdamW over a list of arrays that it updates in place.

    Parameters
    ----------
    params : the arrays to optimise (e.g. ``MLP.params``); they must not be rebound elsewhere.
    lr : base learning rate (> 0).
    betas : (β1, β2), each in [0, 1).
    eps : ε > 0 added to √v̂.
    weight_decay : λ >= 0, decoupled (AdamW): θ ← θ (1 − η_k λ), not added to the gradient.
    clip_norm : if set (> 0), rescale the gradient to global norm ``clip_norm`` when larger.
    schedule : k ↦ multiplier of lr at step index k = step_count before the step (e.g.
        :func:`cosine_decay`); must return a finite value >= 0.

    Attributes: ``step_count`` (steps taken), ``last_lr`` (η of the latest step),
    ``last_grad_norm`` (global gradient norm before clipping at the latest step).
    """

    def __init__(
        self,
        params: Sequence[Array],
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        schedule: Callable[[int], float] | None = None,
    ) -> None:
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence) or not params:
            raise ValueError("params must be a non-empty list of arrays")
        self.params = list(params)
        self._xp = namespace(*self.params)
        require_mutable(self._xp, "params")
        for i, p in enumerate(self.params):
            if not self._xp.isdtype(p.dtype, "real floating"):
                raise TypeError(f"params[{i}] must have a real floating dtype, got {p.dtype}")
        self.lr = _finite(lr, "lr", 0.0, strict=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            check_float(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True),
            check_float(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True),
        )
        self.eps = _finite(eps, "eps", 0.0, strict=True)
        self.weight_decay = _finite(weight_decay, "weight_decay", 0.0, strict=False)
        self.clip_norm = (
            None if clip_norm is None else _finite(clip_norm, "clip_norm", 0.0, strict=True)
        )
        if schedule is not None:
            check_callable(schedule, "schedule", "schedule(k) -> float (or None)")
        self.schedule = schedule
        self.step_count = 0
        self.last_lr = float("nan")
        self.last_grad_norm = float("nan")
        self._m = [self._xp.zeros_like(p) for p in self.params]
        self._v = [self._xp.zeros_like(p) for p in self.params]

    def _grad_norm(self, grads: Sequence[Array]) -> float:
        if isinstance(grads, (str, bytes)) or not isinstance(grads, Sequence):
            raise TypeError("grads must be a list of arrays like params")
        if len(grads) != len(self.params):
            raise ValueError(f"grads must hold {len(self.params)} arrays, got {len(grads)}")
        sq = 0.0
        for i, (g, p) in enumerate(zip(grads, self.params, strict=True)):
            try:
                same = namespace(g) is self._xp
            except TypeError:
                same = False
            if not same or g.dtype != p.dtype:
                raise TypeError(f"grads[{i}] must be an array of the params' namespace and dtype")
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)}, expected {p.shape}")
            sq += float(self._xp.linalg.vector_norm(g)) ** 2
        return math.sqrt(sq)

    def step(self, grads: Sequence[Array]) -> None:
        """Apply one Adam step to ``params`` in place and increment ``step_count``.

        Raises ValueError, leaving every parameter untouched, if a gradient is not finite.
        """
        norm = self._grad_norm(grads)
        if not math.isfinite(norm):
            raise ValueError("grads must be finite (found NaN or inf); parameters left unchanged")
        mult = 1.0 if self.schedule is None else self.schedule(self.step_count)
        mult = _finite(mult, f"schedule({self.step_count})", 0.0, strict=False)
        lr = self.lr * mult
        scale = 1.0
        if self.clip_norm is not None and norm > self.clip_norm:
            scale = self.clip_norm / norm
        self.step_count += 1
        self.last_lr, self.last_grad_norm = lr, norm
        b1, b2 = self.betas
        k = self.step_count
        step_size = lr / (1.0 - b1**k)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - b2**k)
        c1, c2 = (1.0 - b1) * scale, (1.0 - b2) * scale * scale  # clipping folded in, no copy
        decay = 1.0 - lr * self.weight_decay
        for p, g, m, v in zip(self.params, grads, self._m, self._v, strict=True):
            m *= b1
            m += c1 * g
            g2 = g * g
            g2 *= c2
            v *= b2
            v += g2
            denom = self._xp.sqrt(v)
            denom *= inv_sqrt_bc2
            denom += self.eps
            upd = m / denom
            upd *= step_size
            if self.weight_decay:
                p *= decay
            p -= upd

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return NumPy copies of ``step_count`` and the moments ``m.i``, ``v.i``.

        Hyper-parameters are not stored: they come from the constructor.
        """
        out: dict[str, np.ndarray] = {"step_count": np.asarray(self.step_count, dtype=np.int64)}
        for i, (m, v) in enumerate(zip(self._m, self._v, strict=True)):
            out[f"m.{i}"] = np.array(to_numpy(m), copy=True)
            out[f"v.{i}"] = np.array(to_numpy(v), copy=True)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``step_count`` and the moments (all checked before any is written)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
        keys = {"step_count"} | {f"{c}.{i}" for i in range(len(self.params)) for c in "mv"}
        if set(state) != keys:
            raise ValueError(f"state keys do not match the optimiser's: expected {sorted(keys)}")
        check_float_states({k: v for k, v in state.items() if k != "step_count"})
        k = np.asarray(to_numpy(state["step_count"]))
        if k.shape != () or not np.issubdtype(k.dtype, np.integer) or int(k) < 0:
            raise ValueError("state['step_count'] must be a scalar int >= 0")
        new_m: list[Array] = []
        new_v: list[Array] = []
        for i, p in enumerate(self.params):
            for c, dest in (("m", new_m), ("v", new_v)):
                a = to_numpy(state[f"{c}.{i}"])
                if a.shape != tuple(p.shape) or not np.all(np.isfinite(a)):
                    raise ValueError(f"state['{c}.{i}'] must be finite with shape {p.shape}")
                if c == "v" and np.any(a < 0):
                    raise ValueError(f"state['v.{i}'] must be >= 0")
                dest.append(from_numpy(np.array(a, copy=True), self._xp, device(p), p.dtype))
        self.step_count, self._m, self._v = int(k), new_m, new_v
