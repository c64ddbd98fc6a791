"""Adapters between fmref's conventions and those of other flow-matching and diffusion code.

fmref: t = 0 noise, t = 1 data; x_t = α_t z + β_t ε with z ~ p_data, ε ~ N(0, I); the CFM
target is α̇_t z + β̇_t ε; u_t is the marginal velocity (docs/theory.md §1–6).

**Time reversal** (score-SDE, DDPM, diffusers: data at τ = 0, noise at τ = 1). With
τ = 1 − t the same path reads x_τ = α_{1−τ} z + β_{1−τ} ε and its velocity flips sign:
v(x, τ) = −u(x, 1 − τ). :func:`time_reversed` maps either way (it is an involution).

**Two different σ.** The name σ means two things in other code, and fmref names both:

- *EDM's noise level* (Karras samplers, variance-exploding SDEs: data at σ = 0):
  x_σ = z + σ ε is x_t/α_t at the t where σ = β_t/α_t (:func:`edm_sigma_from_time`,
  :func:`time_from_edm_sigma`; Linear at t = 0.25 gives σ = 3). The denoiser
  D(x_σ; σ) = E[z | x_σ] is fmref's x̂ at (α_t x_σ, t) and the score
  ∇log p_σ(x_σ) = α_t ∇log p_t(α_t x_σ) (:func:`ve_denoiser`, :func:`ve_score`).
- *diffusers' flow-match σ* (``FlowMatchEulerDiscreteScheduler``, Stable Diffusion 3, Flux):
  x = (1 − σ) z + σ ε, i.e. fmref's Linear schedule at t = 1 − σ
  (:func:`diffusers_sigma_from_time`; t = 0.25 gives σ = 0.75).

The old names ``sigma_from_time`` / ``time_from_sigma`` (EDM's σ) are deprecated.

**diffusers flow-match schedulers.** σ = 1 − t; the model's timestep is
``num_train_timesteps`` · σ (1000 σ by default); the sampling grid is t = 1 − ``sigmas``
(:func:`diffusers_flow_match_grid` from the formulas, :func:`from_diffusers_scheduler` from a
configured scheduler). ``shift`` s reparameterises time, σ ↦ s σ/(1 + (s − 1) σ); dynamic
shifting with ``mu`` is the same map with s = e^μ ("exponential") or s = μ ("linear");
Karras and exponential spacings respace σ between the shifted ends. Every grid is a grid of
the same Linear path, so the exact field is fmref's ``MarginalPath(data, Linear())``. The
model predicts dx/dσ = ε − z, which is *minus* fmref's u = dx/dt (:func:`from_diffusers_model`,
:func:`as_diffusers_model`).

**Discrete DDPM/DDIM schedules** (``alphas_cumprod`` ᾱ_i, i = 0 … N − 1, data at i = −1):
x_i = √ᾱ_i z + √(1 − ᾱ_i) ε. fmref's time of step i is t_i = 1 − (i + 1)/N, so t = 1 is the
clean data (ᾱ = 1) and t = 0 the last step. :func:`ddpm_schedule` interpolates
λ = log ᾱ by a natural cubic spline in t through these N + 1 nodes (exact at every node,
twice continuously differentiable between), and sets α_t = e^{λ/2}, β_t = √(1 − e^λ), so
α² + β² = 1 (variance preserving) and α̇ = ½ λ̇ α, ββ̇ = −α α̇. β̇ is infinite at t = 1, like
:class:`~fmref.schedules.VP`. :func:`from_ddpm_model` turns an ε-, v- or x̂-prediction model
into fmref's velocity u = α̇ x̂ + β̇ ε̂.

**flow_matching** (facebookresearch): ``x_0`` is the noise ε, ``x_1`` the data z, ``alpha_t``
is α_t, ``sigma_t`` is β_t (not a standard deviation of data noise), ``d_alpha_t``/``d_sigma_t``
are α̇/β̇, ``PathSample.x_t`` is x and ``PathSample.dx_t`` the CFM target α̇ z + β̇ ε. Its
conversions map onto :mod:`fmref.conversions` with x_1 ↔ x̂ and epsilon ↔ ε̂:
``target_to_velocity`` = ``velocity_from_x_hat``; ``velocity_to_target`` =
``x_hat_from_velocity``; ``epsilon_to_target`` = ``x_hat_from_eps_hat``; ``target_to_epsilon``
= ``eps_hat_from_x_hat``; ``epsilon_to_velocity`` = ``velocity_from_x_hat ∘ x_hat_from_eps_hat``;
``velocity_to_epsilon`` = ``eps_hat_from_x_hat ∘ x_hat_from_velocity``. Its ``ODESolver``
calls ``velocity_model(x=x, t=t)`` with a 0-d t (:func:`as_flow_matching_model`).

**torchcfm** (atong01/conditional-flow-matching): ``x0`` is noise, ``x1`` data; see
:func:`torchcfm_schedule` for what maps exactly and what does not.

**Loss scale.** torchcfm, flow_matching and diffusers train on the squared error *averaged*
over the d coordinates; fmref's losses and floor *sum* them, so theirs are fmref's divided by
d (``reduction="mean"`` in :mod:`fmref.losses` gives their scale).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from ._check import check_float, check_int
from ._xp import Array, device, from_numpy, namespace, to_numpy
from .marginals import MarginalPath
from .schedules import VP, Cosine, Custom, Linear, LinearVP, Polynomial, Schedule, SqrtBeta

__all__ = [
    "DiffusersGrid",
    "as_diffusers_model",
    "as_flow_matching_model",
    "ddpm_schedule",
    "ddpm_time",
    "diffusers_flow_match_grid",
    "diffusers_mu",
    "diffusers_sigma_from_time",
    "diffusers_timestep",
    "edm_sigma_from_time",
    "flow_matching_schedule",
    "from_ddpm_model",
    "from_diffusers_model",
    "from_diffusers_scheduler",
    "from_flow_matching_sample",
    "reverse_time",
    "sigma_from_time",
    "time_from_diffusers_sigma",
    "time_from_edm_sigma",
    "time_from_sigma",
    "time_reversed",
    "torchcfm_noise",
    "torchcfm_schedule",
    "ve_denoiser",
    "ve_score",
]

Field = Callable[[Array, Array], Array]


def reverse_time(t: Any) -> Any:
    """τ = 1 − t: fmref's time ↔ a data-at-0 convention's time (works both ways)."""
    return 1 - t


def time_reversed(field: Field) -> Field:
    """Return the field of the reversed clock: (x, τ) ↦ −field(x, 1 − τ).

    Maps a data-at-0 velocity v (score-SDE / DDPM probability-flow) to fmref's u and back.
    """
    if not callable(field):
        raise TypeError(f"field must be callable, got {type(field).__name__}")
    return lambda x, t: -field(x, 1 - t)


def edm_sigma_from_time(schedule: Schedule, t: Any) -> Array:
    """Return EDM's noise level σ = β_t/α_t of x_σ = x_t/α_t = z + σ ε (inf where α_t = 0).

    This is *not* diffusers' flow-match σ (:func:`diffusers_sigma_from_time`): for Linear at
    t = 0.25 it is 3.0, where diffusers' σ is 0.75.
    """
    sv = schedule(t)
    xp = namespace(sv.alpha)
    with np.errstate(divide="ignore"):
        return xp.where(sv.alpha > 0, sv.beta / sv.alpha, xp.full_like(sv.alpha, math.inf))


def time_from_edm_sigma(schedule: Schedule, sigma: Any, *, tol: float = 1e-15) -> np.ndarray:
    """Invert EDM's σ = β_t/α_t by bisection (float64 NumPy); needs β/α decreasing in t.

    σ = 0 gives t = 1 and σ = inf gives the smallest t with α_t = 0 (t = 0).
    """
    s = np.asarray(sigma, dtype=np.float64)
    if np.any(np.isnan(s)) or np.any(s < 0):
        raise ValueError("sigma must be nonnegative (no NaN)")
    lo, hi = np.zeros_like(s), np.ones_like(s)
    # β/α is decreasing: if σ(mid) > σ the answer lies right of mid. 60 halvings reach 1e-18.
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        right = np.asarray(edm_sigma_from_time(schedule, mid)) > s
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
        if np.all(hi - lo <= tol):
            break
    return 0.5 * (lo + hi)


_SIGMA_NAMES = (
    "{old} means EDM's noise level σ = β_t/α_t (x_σ = x_t/α_t, data at σ = 0); use {new}, "
    "or diffusers_sigma_from_time / time_from_diffusers_sigma for diffusers' flow-match "
    "σ = 1 − t"
)


def sigma_from_time(schedule: Schedule, t: Any) -> Array:
    """Deprecated alias of :func:`edm_sigma_from_time` (EDM's σ = β_t/α_t)."""
    warnings.warn(
        _SIGMA_NAMES.format(old="sigma_from_time", new="edm_sigma_from_time"),
        DeprecationWarning,
        stacklevel=2,
    )
    return edm_sigma_from_time(schedule, t)


def time_from_sigma(schedule: Schedule, sigma: Any, *, tol: float = 1e-15) -> np.ndarray:
    """Deprecated alias of :func:`time_from_edm_sigma` (EDM's σ = β_t/α_t)."""
    warnings.warn(
        _SIGMA_NAMES.format(old="time_from_sigma", new="time_from_edm_sigma"),
        DeprecationWarning,
        stacklevel=2,
    )
    return time_from_edm_sigma(schedule, sigma, tol=tol)


def ve_score(marginal: MarginalPath, x_sigma: Any, sigma: float) -> Array:
    """∇log p_σ(x_σ) for x_σ = z + σ ε: α_t ∇log p_t(α_t x_σ) at the t with β_t/α_t = σ."""
    t, a = _ve_time(marginal, sigma)
    return a * marginal.score(a * x_sigma, t)


def ve_denoiser(marginal: MarginalPath, x_sigma: Any, sigma: float) -> Array:
    """EDM's denoiser D(x_σ; σ) = E[z | x_σ] = fmref's x̂ at (α_t x_σ, t), β_t/α_t = σ."""
    t, a = _ve_time(marginal, sigma)
    return marginal.posterior_mean(a * x_sigma, t)


def _ve_time(marginal: MarginalPath, sigma: float) -> tuple[float, float]:
    sigma = check_float(sigma, "sigma", low=0.0, low_open=True)
    t = float(time_from_edm_sigma(marginal.schedule, sigma))
    return t, float(marginal.schedule(np.asarray(t)).alpha)


def flow_matching_schedule(scheduler: Any) -> Schedule:
    """fmref's schedule for a flow_matching scheduler (by class name; no import needed).

    CondOTScheduler → Linear, CosineScheduler → Cosine, LinearVPScheduler → LinearVP,
    VPScheduler(beta_min, beta_max) → VP(b, B), PolynomialConvexScheduler(n) → Polynomial(n).
    """
    name = type(scheduler).__name__
    if name == "CondOTScheduler":
        return Linear()
    if name == "CosineScheduler":
        return Cosine()
    if name == "LinearVPScheduler":
        return LinearVP()
    if name == "VPScheduler":
        return VP(b=float(scheduler.beta_min), B=float(scheduler.beta_max))
    if name == "PolynomialConvexScheduler":
        return Polynomial(float(scheduler.n))
    raise ValueError(f"scheduler: no fmref schedule for flow_matching's {name}")


def from_flow_matching_sample(sample: Any) -> dict[str, Array]:
    """Rename a flow_matching ``PathSample`` to fmref's names: z, eps, x, target, t.

    z = x_1 (data), eps = x_0 (noise), x = x_t = α z + β ε, target = dx_t = α̇ z + β̇ ε.
    """
    return {
        "z": sample.x_1,
        "eps": sample.x_0,
        "x": sample.x_t,
        "target": sample.dx_t,
        "t": sample.t,
    }


def as_flow_matching_model(field: Field) -> Callable[..., Array]:
    """Wrap an fmref-style field(x, t) with t of shape (n,) as flow_matching's velocity model.

    flow_matching's ODESolver calls ``model(x=x, t=t)`` with a 0-d t; it is broadcast to (n,).
    t is clamped to [0, 1]: torchdiffeq's adaptive solvers (dopri5) probe the field past the end
    of the interval while choosing the first step (t up to 1.2 on [0, 1]), where an exact field
    is not defined and fmref refuses t; the solution at the grid times never uses those probes
    beyond step-size control. The field is differentiable under torch autograd, so
    ``compute_likelihood(exact_divergence=True)`` works with ``MarginalPath.vector_field``.
    """

    def model(x: Array, t: Array, **extras: Any) -> Array:
        xp = namespace(x)
        tt = xp.clip(xp.asarray(t, dtype=x.dtype), 0.0, 1.0)
        if tt.ndim == 0:
            tt = xp.broadcast_to(xp.reshape(tt, (1,)), (x.shape[0],))
        return field(x, tt)

    return model


# -- diffusers: flow-match schedulers ------------------------------------------------------


def _count(v: Any, name: str, low: int = 1) -> int:
    return check_int(v, name, low=low)


def _positive(v: Any, name: str) -> float:
    return check_float(v, name, low=0.0, low_open=True)


def diffusers_sigma_from_time(t: Any) -> Any:
    """Return diffusers' flow-match σ = 1 − t (x = (1 − σ) z + σ ε: fmref's Linear path).

    Not EDM's σ = β_t/α_t (:func:`edm_sigma_from_time`). Works on floats and arrays.
    """
    return 1 - t


def time_from_diffusers_sigma(sigma: Any) -> Any:
    """Return fmref's t = 1 − σ for diffusers' flow-match σ (the inverse of the above)."""
    return 1 - sigma


def diffusers_timestep(t: Any, *, num_train_timesteps: int = 1000) -> Any:
    """Return the timestep a diffusers flow-match model is called with: N σ = N (1 − t).

    N = ``num_train_timesteps`` (1000 in SD3 and Flux). Flux's pipeline divides this by 1000
    before calling its transformer, which multiplies it back.
    """
    return _count(num_train_timesteps, "num_train_timesteps") * (1 - t)


def diffusers_mu(
    image_seq_len: int,
    *,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """Return Flux's dynamic-shift μ, linear in the image token count (``calculate_shift``).

    μ = base_shift + (image_seq_len − base_seq_len)(max_shift − base_shift)/(max_seq_len −
    base_seq_len); the flow-match grid is then shifted with s = e^μ.
    """
    n = _count(image_seq_len, "image_seq_len")
    lo, hi = _count(base_seq_len, "base_seq_len"), _count(max_seq_len, "max_seq_len")
    if hi <= lo:
        raise ValueError(f"max_seq_len must exceed base_seq_len, got {hi} <= {lo}")
    slope = (float(max_shift) - float(base_shift)) / (hi - lo)
    return float(base_shift) + slope * (n - lo)


def _shifted(sigma: np.ndarray, s: float) -> np.ndarray:
    # σ ↦ sσ/(1 + (s − 1)σ): diffusers' ``shift``; its exponential time shift with μ is the
    # same map with s = e^μ (e^μ/(e^μ + 1/σ − 1) rearranged), the linear one with s = μ.
    return s * sigma / (1 + (s - 1) * sigma)


@final
@dataclass(frozen=True)
class DiffusersGrid:
    """A diffusers flow-match sampling grid in both conventions (float64 NumPy).

    t : (m + 1,) fmref times, increasing from noise to t = 1 (data), = 1 − ``sigmas``.
    sigmas : (m + 1,) diffusers' σ, decreasing, ending with the appended σ = 0.
    timesteps : (m,) what the model is called with at each step, N σ.
    """

    t: np.ndarray
    sigmas: np.ndarray
    timesteps: np.ndarray


_SPACINGS = ("linear", "karras", "exponential")


def diffusers_flow_match_grid(
    num_inference_steps: int,
    *,
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    spacing: str = "linear",
    shift_terminal: float | None = None,
) -> DiffusersGrid:
    """Return the grid of ``FlowMatchEulerDiscreteScheduler.set_timesteps`` from its formulas.

    With N = ``num_train_timesteps`` and m = ``num_inference_steps``: the scheduler's own ends
    are σ_max = 1 and σ_min = shift(1/N) (unshifted 1/N under dynamic shifting); m values
    linearly spaced between them are shifted (again) by ``shift`` s, σ ↦ sσ/(1 + (s − 1)σ), or,
    when ``mu`` is given (``use_dynamic_shifting=True``), by s = e^μ (``time_shift_type=
    "exponential"``) or s = μ ("linear"); ``shift_terminal`` stretches 1 − σ so the last σ
    equals it; ``spacing="karras"`` respaces to (σ_max^{1/7} + r(σ_min^{1/7} − σ_max^{1/7}))^7,
    r ∈ [0, 1], and "exponential" to a geometric sequence between the shifted ends. σ = 0 is
    appended; t = 1 − σ.
    """
    m = _count(num_inference_steps, "num_inference_steps")
    big_n = _count(num_train_timesteps, "num_train_timesteps")
    if spacing not in _SPACINGS:
        raise ValueError(f"spacing must be one of {_SPACINGS}, got {spacing!r}")
    if time_shift_type not in ("exponential", "linear"):
        raise ValueError(
            f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}"
        )
    s = _positive(shift, "shift")
    if mu is not None:
        if s != 1.0:
            raise ValueError("pass shift or mu (dynamic shifting), not both")
        if isinstance(mu, bool) or not isinstance(mu, (int, float, np.integer, np.floating)):
            raise TypeError(f"mu must be a float, got {type(mu).__name__}")
        if not math.isfinite(mu):
            raise ValueError(f"mu must be a finite float, got {mu!r}")
        s = math.exp(mu) if time_shift_type == "exponential" else _positive(mu, "mu")
        sigma_min = 1.0 / big_n
    else:
        sigma_min = float(_shifted(np.array(1.0 / big_n), s))
    sig = np.linspace(big_n, sigma_min * big_n, m) / big_n
    sig = _shifted(sig, s)
    if shift_terminal is not None:
        end = _positive(shift_terminal, "shift_terminal")
        sig = 1 - (1 - sig) * (1 - end) / (1 - sig[-1])
    if spacing == "karras":
        rho = 7.0
        lo, hi = sig[-1] ** (1 / rho), sig[0] ** (1 / rho)
        sig = (hi + np.linspace(0, 1, m) * (lo - hi)) ** rho
    elif spacing == "exponential":
        sig = np.exp(np.linspace(math.log(sig[0]), math.log(sig[-1]), m))
    sigmas = np.concatenate([sig, [0.0]])
    return DiffusersGrid(1 - sigmas, sigmas, sig * big_n)


def from_diffusers_scheduler(scheduler: Any) -> DiffusersGrid:
    """Read the grid of a configured diffusers flow-match scheduler (after ``set_timesteps``).

    t = 1 − ``scheduler.sigmas`` exactly (float64 of its stored values), so an Euler step of
    the scheduler from σ_i to σ_{i+1} is an Euler step of fmref's ODE from t_i to t_{i+1}.
    """
    name = type(scheduler).__name__
    if "FlowMatch" not in name:
        raise TypeError(f"scheduler must be a diffusers FlowMatch* scheduler, got {name}")
    config = getattr(scheduler, "config", {})
    if bool(getattr(config, "invert_sigmas", False)):
        raise ValueError("scheduler: invert_sigmas=True (data at σ = 1) is not mapped")
    sigmas = np.asarray(to_numpy(scheduler.sigmas), dtype=np.float64)
    steps = np.asarray(to_numpy(scheduler.timesteps), dtype=np.float64)
    if sigmas.ndim != 1 or np.any(np.diff(sigmas) >= 0):
        raise ValueError("scheduler.sigmas must be a decreasing 1-D sequence")
    return DiffusersGrid(1 - sigmas, sigmas, steps)


def from_diffusers_model(
    model: Callable[[Array, Array], Array], *, num_train_timesteps: int = 1000
) -> Field:
    """Return fmref's field u(x, t) = −model(x, N(1 − t)) of a diffusers flow-match model.

    SD3 and Flux regress ε − z = dx/dσ (their "flow" target), minus fmref's α̇ z + β̇ ε = z − ε.
    ``model(x, timestep)`` takes x (n, d) and timestep (n,) in the scheduler's units N σ.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    big_n = _count(num_train_timesteps, "num_train_timesteps")
    return lambda x, t: -model(x, big_n * (1 - t))


def as_diffusers_model(field: Field, *, num_train_timesteps: int = 1000) -> Callable[..., Array]:
    """Wrap fmref's field as a diffusers flow-match model: (x, timestep) ↦ −u(x, 1 − timestep/N).

    A 0-d timestep (what a pipeline loop passes) is broadcast to (n,) in x's dtype, so
    ``scheduler.step(model(x, ts), ts, x)`` is an Euler step of fmref's ODE.
    """
    if not callable(field):
        raise TypeError(f"field must be callable, got {type(field).__name__}")
    big_n = _count(num_train_timesteps, "num_train_timesteps")

    def model(x: Array, timestep: Any, **extras: Any) -> Array:
        xp = namespace(x)
        ts = xp.asarray(timestep, dtype=x.dtype, device=device(x))
        if ts.ndim == 0:
            ts = xp.broadcast_to(xp.reshape(ts, (1,)), (x.shape[0],))
        return -field(x, xp.clip(1 - ts / big_n, 0.0, 1.0))

    return model


# -- diffusers / DDPM: discrete alphas_cumprod ------------------------------------------------


class _Cubic:
    """A piecewise cubic λ(t) (scipy's spline coefficients) evaluated in any namespace."""

    def __init__(self, knots: np.ndarray, coef: np.ndarray) -> None:
        self.knots, self.coef = knots, coef

    def __call__(self, t: Array, nu: int = 0) -> Array:
        xp = namespace(t)
        dev, dt, shape = device(t), t.dtype, t.shape
        flat = xp.reshape(t, (-1,))
        k = from_numpy(self.knots, xp, dev, dt)
        last = self.coef.shape[1] - 1
        idx = xp.clip(xp.searchsorted(k, flat, side="right") - 1, 0, last)
        h = flat - xp.take(k, idx)
        c = [xp.take(from_numpy(self.coef[j], xp, dev, dt), idx) for j in range(4)]
        out = (
            ((c[0] * h + c[1]) * h + c[2]) * h + c[3]
            if nu == 0
            else (3 * c[0] * h + 2 * c[1]) * h + c[2]
        )
        return xp.reshape(out, shape)


def ddpm_time(timestep: Any, *, num_train_timesteps: int = 1000) -> Any:
    """Return fmref's t = 1 − (i + 1)/N of DDPM step i (i = N − 1 is t = 0, data is t = 1)."""
    return 1 - (timestep + 1) / _count(num_train_timesteps, "num_train_timesteps")


def ddpm_schedule(alphas_cumprod: Any) -> Custom:
    """Return the VP :class:`~fmref.schedules.Custom` schedule of a discrete ᾱ_0 > … > ᾱ_{N−1}.

    Nodes: t_j = j/N carries λ = log ᾱ_{N−1−j} (j < N) and λ(1) = 0 (the clean data). λ(t) is
    the natural cubic spline through them; α_t = e^{λ/2}, β_t = √(1 − e^λ), α̇ = ½ λ̇ α,
    β̇ = −α α̇/β (−∞ at t = 1). At t = t_j, x_t = α z + β ε is exactly diffusers'
    ``add_noise(z, ε, i)``. Raises ValueError when ᾱ is not strictly decreasing in (0, 1) or
    the spline is not increasing (ᾱ too irregular to interpolate monotonically).
    """
    ac = np.asarray(to_numpy(alphas_cumprod), dtype=np.float64)
    if ac.ndim != 1 or ac.shape[0] < 2:
        raise ValueError(
            f"alphas_cumprod must be a 1-D sequence of >= 2 values, got shape {ac.shape}"
        )
    if not (np.all(np.isfinite(ac)) and np.all((ac > 0) & (ac < 1)) and np.all(np.diff(ac) < 0)):
        raise ValueError("alphas_cumprod must be strictly decreasing values in (0, 1)")
    from scipy.interpolate import CubicSpline

    big_n = ac.shape[0]
    knots = np.arange(big_n + 1) / big_n
    lam = np.concatenate([np.log(ac[::-1]), [0.0]])
    spline = CubicSpline(knots, lam, bc_type="natural")
    dense = np.linspace(0.0, 1.0, 8 * big_n + 1)
    if np.any(spline(dense, 1) <= 0) or np.any(spline(dense[:-1]) >= 0):
        raise ValueError("alphas_cumprod: its log-spline is not increasing in t; ᾱ too irregular")
    cubic = _Cubic(knots, np.asarray(spline.c))

    def lam_fn(t: Array) -> Array:
        # λ(1) = 0 exactly (the clean data): in float32 the spline's sum there rounds to ~1e-9,
        # which would give β_1 ≈ 3e-5 instead of 0.
        return namespace(t).where(t < 1, cubic(t), 0.0)

    def alpha(t: Array) -> Array:
        return namespace(t).exp(0.5 * lam_fn(t))

    def beta(t: Array) -> Array:
        xp = namespace(t)
        # −expm1 keeps β accurate near t = 1 where ᾱ → 1; clip guards rounding above λ = 0.
        return xp.sqrt(xp.clip(0.0 - xp.expm1(lam_fn(t)), 0.0, None))

    def alpha_dot(t: Array) -> Array:
        return 0.5 * cubic(t, 1) * alpha(t)

    def beta_dot(t: Array) -> Array:
        with np.errstate(divide="ignore"):
            return -alpha(t) * alpha_dot(t) / beta(t)

    return Custom(alpha, beta, alpha_dot, beta_dot)


_PREDICTIONS = ("epsilon", "v_prediction", "sample")


def from_ddpm_model(
    model: Callable[[Array, Array], Array],
    alphas_cumprod: Any,
    *,
    prediction_type: str = "epsilon",
) -> Field:
    """Return fmref's velocity field u(x, t) of a DDPM/DDIM-style model ``model(x, timestep)``.

    The model is called at the continuous timestep i = N(1 − t) − 1 (its training steps are
    i = 0 … N − 1, so t ∈ [0, 1 − 1/N]). Its output is ε̂ ("epsilon"), v̂ = α ε̂ − β x̂
    ("v_prediction", diffusers' ``get_velocity``) or x̂ ("sample"); with α² + β² = 1,
    x̂ = α x − β v̂. Then u = α̇ x̂ + β̇ ε̂, ε̂ = (x − α x̂)/β, on :func:`ddpm_schedule`.
    """
    from .conversions import velocity_from_x_hat, x_hat_from_eps_hat

    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    if prediction_type not in _PREDICTIONS:
        raise ValueError(f"prediction_type must be one of {_PREDICTIONS}, got {prediction_type!r}")
    sched = ddpm_schedule(alphas_cumprod)
    big_n = int(np.asarray(to_numpy(alphas_cumprod)).shape[0])

    def field(x: Array, t: Array) -> Array:
        xp = namespace(x)
        if bool(xp.any(t > 1 - 1 / big_n + 1e-12)):
            raise ValueError(
                f"t: a DDPM model is defined at timesteps 0..{big_n - 1}, i.e. t <= 1 − 1/N = "
                f"{1 - 1 / big_n}; stop the ODE there"
            )
        out = model(x, big_n * (1 - t) - 1)
        if prediction_type == "epsilon":
            x_hat = x_hat_from_eps_hat(sched, x, t, out)
        elif prediction_type == "v_prediction":
            sv = sched(t)
            x_hat = xp.reshape(sv.alpha, (-1, 1)) * x - xp.reshape(sv.beta, (-1, 1)) * out
        else:
            x_hat = out
        return velocity_from_x_hat(sched, x, t, x_hat)

    return field


_TORCHCFM = ("cfm", "target", "vp", "sb")


def torchcfm_schedule(matcher: str, sigma: float = 0.0) -> Schedule:
    """fmref's Gaussian path for torchcfm's matcher with independent (x0, x1) and constant σ.

    - ``"cfm"`` (ConditionalFlowMatcher; x_t = t x1 + (1−t) x0 + σ ε): given z = x1 alone,
      x_t ~ N(t z, ((1−t)² + σ²) I), so α_t = t, β_t = √((1−t)² + σ²); Linear when σ = 0.
      p_0 = N(0, (1 + σ²) I), p_1 = p_data ∗ N(0, σ² I).
    - ``"vp"`` (VariancePreservingConditionalFlowMatcher; cos(πt/2) x0 + sin(πt/2) x1 + σ ε):
      α_t = sin(πt/2), β_t = √(cos²(πt/2) + σ²); Cosine when σ = 0; p_0, p_1 as for "cfm".
    - ``"target"`` (TargetConditionalFlowMatcher, Lipman et al.; x_t = t x1 + (1 − (1−σ)t) ε):
      α_t = t, β_t = 1 − (1 − σ) t, and its target (x1 − (1−σ) x_t)/(1 − (1−σ)t) *equals*
      fmref's conditional_vector_field(x_t, z, t). p_0 = N(0, I) = p_init (β_0 = 1) and
      p_1 = p_data ∗ N(0, σ² I).
    - ``"sb"`` (SchrodingerBridgeConditionalFlowMatcher's path with its OT pairing bypassed,
      i.e. x0 independent of x1; x_t = t x1 + (1−t) x0 + σ √(t(1−t)) ε): α_t = t,
      β_t = √((1−t)² + σ² t(1−t)), so p_0 = p_init and p_1 = p_data; σ = 1 is
      :class:`~fmref.schedules.SqrtBeta`. β̇ is infinite at t = 1 for σ > 0 (ββ̇ = −σ²/2
      there), so its L* is infinite over [0, 1].

    For "cfm", "vp" and "sb" with σ > 0 the per-sample target is *not* α̇ z + β̇ ε for
    ε = :func:`torchcfm_noise`: it is conditioned on (x0, x1), not on z alone. Its conditional
    mean given (x_t, z) is fmref's u_t(x_t | z), so the loss minimiser is
    ``MarginalPath(data, torchcfm_schedule(...)).vector_field`` and the two losses differ by a
    constant. OT-coupled matchers (ExactOptimalTransport, and SchrodingerBridge as torchcfm
    runs it) pair x0 with x1 through a minibatch plan, so x0 is not independent of z and no
    fmref path describes them.
    """
    if matcher not in _TORCHCFM:
        raise ValueError(f"matcher must be one of {_TORCHCFM}, got {matcher!r}")
    if matcher == "sb":
        sigma = check_float(sigma, "sigma", low=0.0)
    else:
        sigma = check_float(sigma, "sigma", low=0.0, high=1.0, high_open=True)
    s2 = float(sigma) ** 2
    h = math.pi / 2
    if matcher == "target":
        c = 1 - float(sigma)
        return Custom(lambda t: t, lambda t: 1 - c * t, lambda t: 0 * t + 1, lambda t: 0 * t - c)
    if sigma == 0:
        return Cosine() if matcher == "vp" else Linear()
    if matcher == "sb":
        if s2 == 1.0:
            return SqrtBeta()

        def sb_beta(t: Array) -> Array:
            return namespace(t).sqrt((1 - t) ** 2 + s2 * t * (1 - t))

        def sb_beta_dot(t: Array) -> Array:
            # d(β²)/dt = −2(1 − t) + σ²(1 − 2t); β̇ = that/(2β), −∞ at t = 1.
            with np.errstate(divide="ignore"):
                return (-2 * (1 - t) + s2 * (1 - 2 * t)) / (2 * sb_beta(t))

        return Custom(lambda t: t, sb_beta, lambda t: 0 * t + 1, sb_beta_dot)
    if matcher == "cfm":
        return Custom(
            lambda t: t,
            lambda t: namespace(t).sqrt((1 - t) ** 2 + s2),
            lambda t: 0 * t + 1,
            lambda t: -(1 - t) / namespace(t).sqrt((1 - t) ** 2 + s2),
        )

    def beta(t: Array) -> Array:
        xp = namespace(t)
        return xp.sqrt(xp.cos(h * t) ** 2 + s2)

    return Custom(
        lambda t: namespace(t).sin(h * t),
        beta,
        lambda t: h * namespace(t).cos(h * t),
        lambda t: -h * namespace(t).sin(h * t) * namespace(t).cos(h * t) / beta(t),
    )


def torchcfm_noise(
    matcher: str, x0: Array, t: Array, eps: Array | None = None, sigma: float = 0.0
) -> Array:
    """The ε of fmref's path with x_t = α_t z + β_t ε for a torchcfm draw (x0, x1 = z, t, ε').

    "cfm": ε = ((1−t) x0 + σ ε')/β_t; "vp": ε = (cos(πt/2) x0 + σ ε')/β_t; "sb":
    ε = ((1−t) x0 + σ√(t(1−t)) ε')/β_t; "target": ε = ε' (x0 unused). With σ = 0, ε = x0
    exactly (also at t = 1, where β_t = 0); "sb" with σ > 0 at t = 1 takes the limit ε'.
    ε ~ N(0, I) independent of z whenever x0 and ε' are. t has shape (n,); ε' is required
    whenever σ > 0.
    """
    sched = torchcfm_schedule(matcher, sigma)
    if matcher == "target":
        if eps is None:
            raise ValueError("eps: the 'target' matcher draws x_t from its own noise; pass it")
        return eps
    if sigma == 0:
        # x_t = α_t z + w_t x0 with w_t = β_t: ε = x0 exactly, including 0/0 at t = 1.
        return x0
    if eps is None:
        raise ValueError(f"eps: the {matcher!r} matcher with sigma > 0 adds σ ε'; pass its ε'")
    xp = namespace(x0, t)
    tc = xp.reshape(t, (-1, 1))
    w = xp.cos(math.pi / 2 * tc) if matcher == "vp" else (1 - tc)
    s = sigma * xp.sqrt(tc * (1 - tc)) if matcher == "sb" else sigma
    b = xp.reshape(sched(t).beta, (-1, 1))
    safe = xp.where(b > 0, b, xp.ones_like(b))
    # Only "sb" reaches β = 0 with σ > 0 (at t = 1); its ε tends to ε' there.
    return xp.where(b > 0, (w * x0 + s * eps) / safe, eps)
