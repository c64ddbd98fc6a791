"""Adapters between fmref's conventions and those of other flow-matching and diffusion code.

fmref: t = 0 noise, t = 1 data; x_t = α_t z + β_t ε with z ~ p_data, ε ~ N(0, I); the CFM
target is α̇_t z + β̇_t ε; u_t is the marginal velocity (docs/theory.md §1–6).

**Time reversal** (score-SDE, DDPM, diffusers: data at τ = 0, noise at τ = 1). With
τ = 1 − t the same path reads x_τ = α_{1−τ} z + β_{1−τ} ε and its velocity flips sign:
v(x, τ) = −u(x, 1 − τ). :func:`time_reversed` maps either way (it is an involution).

**Noise level σ** (EDM/Karras samplers in diffusers, variance-exploding SDEs: data at σ = 0).
x_σ = z + σ ε is x_t/α_t at the t where σ = β_t/α_t (:func:`sigma_from_time`,
:func:`time_from_sigma`). Hence the denoiser D(x_σ; σ) = E[z | x_σ] is fmref's x̂ at
(α_t x_σ, t) and the score ∇log p_σ(x_σ) = α_t ∇log p_t(α_t x_σ) (:func:`ve_denoiser`,
:func:`ve_score`). DDPM's ᾱ (``alphas_cumprod``) is α_t = √ᾱ, β_t = √(1 − ᾱ), σ = √((1−ᾱ)/ᾱ).

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._check import check_float
from ._xp import Array, namespace
from .marginals import MarginalPath
from .schedules import VP, Cosine, Custom, Linear, LinearVP, Polynomial, Schedule

__all__ = [
    "as_flow_matching_model",
    "flow_matching_schedule",
    "from_flow_matching_sample",
    "reverse_time",
    "sigma_from_time",
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


def sigma_from_time(schedule: Schedule, t: Any) -> Array:
    """Noise level σ = β_t/α_t of the variance-exploding view x_σ = x_t/α_t (inf at α_t = 0)."""
    sv = schedule(t)
    xp = namespace(sv.alpha)
    with np.errstate(divide="ignore"):
        return xp.where(sv.alpha > 0, sv.beta / sv.alpha, xp.full_like(sv.alpha, math.inf))


def time_from_sigma(schedule: Schedule, sigma: Any, *, tol: float = 1e-15) -> np.ndarray:
    """Invert σ = β_t/α_t by bisection (float64 NumPy); needs β/α decreasing in t.

    σ = 0 gives t = 1 and σ = inf gives the smallest t with α_t = 0 (t = 0).
    """
    s = np.asarray(sigma, dtype=np.float64)
    if np.any(np.isnan(s)) or np.any(s < 0):
        raise ValueError("sigma must be nonnegative (no NaN)")
    lo, hi = np.zeros_like(s), np.ones_like(s)
    # β/α is decreasing: if σ(mid) > σ the answer lies right of mid. 60 halvings reach 1e-18.
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        right = np.asarray(sigma_from_time(schedule, mid)) > s
        lo, hi = np.where(right, mid, lo), np.where(right, hi, mid)
        if np.all(hi - lo <= tol):
            break
    return 0.5 * (lo + hi)


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
    t = float(time_from_sigma(marginal.schedule, sigma))
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
    """

    def model(x: Array, t: Array, **extras: Any) -> Array:
        xp = namespace(x)
        tt = xp.asarray(t, dtype=x.dtype)
        if tt.ndim == 0:
            tt = xp.broadcast_to(xp.reshape(tt, (1,)), (x.shape[0],))
        return field(x, tt)

    return model


_TORCHCFM = ("cfm", "target", "vp")


def torchcfm_schedule(matcher: str, sigma: float = 0.0) -> Schedule:
    """fmref's Gaussian path for torchcfm's matcher with independent (x0, x1) and constant σ.

    - ``"cfm"`` (ConditionalFlowMatcher; x_t = t x1 + (1−t) x0 + σ ε): given z = x1 alone,
      x_t ~ N(t z, ((1−t)² + σ²) I), so α_t = t, β_t = √((1−t)² + σ²); Linear when σ = 0.
    - ``"vp"`` (VariancePreservingConditionalFlowMatcher; cos(πt/2) x0 + sin(πt/2) x1 + σ ε):
      α_t = sin(πt/2), β_t = √(cos²(πt/2) + σ²); Cosine when σ = 0.
    - ``"target"`` (TargetConditionalFlowMatcher, Lipman et al.; x_t = t x1 + (1 − (1−σ)t) ε):
      α_t = t, β_t = 1 − (1 − σ) t, and its target (x1 − (1−σ) x_t)/(1 − (1−σ)t) *equals*
      fmref's conditional_vector_field(x_t, z, t).

    For "cfm" and "vp" with σ > 0 the per-sample target (x1 − x0, resp. its trigonometric
    form) is *not* α̇ z + β̇ ε for ε = :func:`torchcfm_noise`: it is conditioned on (x0, x1),
    not on z alone. Its conditional mean given (x_t, z) is fmref's u_t(x_t | z), so the loss
    minimiser is ``MarginalPath(data, torchcfm_schedule(...)).vector_field`` and the two
    losses differ by a constant. p_0 = N(0, (1 + σ²) I) and p_1 = p_data ∗ N(0, σ² I) then.
    OT-coupled matchers (ExactOptimalTransport, SchrodingerBridge) pair x0 with x1 through a
    minibatch plan, so x0 is not independent of z and no fmref path describes them.
    """
    if matcher not in _TORCHCFM:
        raise ValueError(f"matcher must be one of {_TORCHCFM}, got {matcher!r}")
    sigma = check_float(sigma, "sigma", low=0.0, high=1.0, high_open=True)
    s2 = float(sigma) ** 2
    h = math.pi / 2
    if matcher == "target":
        c = 1 - float(sigma)
        return Custom(lambda t: t, lambda t: 1 - c * t, lambda t: 0 * t + 1, lambda t: 0 * t - c)
    if sigma == 0:
        return Linear() if matcher == "cfm" else Cosine()
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

    "cfm": ε = ((1−t) x0 + σ ε')/β_t; "vp": ε = (cos(πt/2) x0 + σ ε')/β_t; "target": ε = ε'
    (x0 unused). ε ~ N(0, I) independent of z whenever x0 and ε' are. t has shape (n,).
    """
    sched = torchcfm_schedule(matcher, sigma)
    if matcher == "target":
        if eps is None:
            raise ValueError("eps: the 'target' matcher draws x_t from its own noise; pass it")
        return eps
    xp = namespace(x0, t)
    tc = xp.reshape(t, (-1, 1))
    w = (1 - tc) if matcher == "cfm" else xp.cos(math.pi / 2 * tc)
    mix = w * x0 if eps is None or sigma == 0 else w * x0 + sigma * eps
    return mix / xp.reshape(sched(t).beta, (-1, 1))
