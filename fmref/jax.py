"""fmref's exact field as JAX ODE right-hand sides, in diffrax's ``f(t, y, args)`` form.

Every :class:`~fmref.MarginalPath` quantity accepts JAX arrays, eagerly and under ``jax.jit``,
``jax.grad`` and ``jax.vmap`` (value checks run eagerly and are skipped on tracers; the kernel
then takes its exact residual route and centred divergence, valid for every input). These
helpers only fix the calling convention of ODE libraries: diffrax calls ``f(t, y, args)`` with
a 0-d t, and flows a pytree state.

Recipe (diffrax is not a dependency of fmref)::

    import diffrax
    term = diffrax.ODETerm(fmref.jax.vector_field_term(marginal))
    sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0=0.0, t1=1.0, dt0=0.05, y0=x0)

    # exact log-likelihood: integrate (x, ℓ) with dℓ/dt = −div u_t(x) from data (t = 1) to
    # noise (t = 0); log p_1(x_1) = log p_0(x_0) − ℓ(0)
    term = diffrax.ODETerm(fmref.jax.log_prob_term(marginal))
    sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0=1.0, t1=0.0, dt0=-0.05,
                              y0=(x1, jnp.zeros(x1.shape[0])))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._xp import Array
from .marginals import MarginalPath

__all__ = ["log_prob_term", "vector_field_term"]


def _check(marginal: Any) -> MarginalPath:
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    return marginal


def vector_field_term(marginal: MarginalPath) -> Callable[[Any, Array, Any], Array]:
    """Return f(t, x, args) = u_t(x) for x of shape (n, d) or (d,), t a 0-d array or float."""
    mp = _check(marginal)

    def f(t: Any, x: Array, args: Any = None) -> Array:
        if x.ndim == 1:
            return mp.vector_field(x[None, :], t)[0]
        return mp.vector_field(x, t)

    return f


def log_prob_term(marginal: MarginalPath) -> Callable[[Any, tuple[Array, Array], Any], Any]:
    """Return f(t, (x, ℓ), args) = (u_t(x), −div u_t(x)), the instantaneous change of variables.

    Both come from one evaluation sharing the rotations; x is (n, d), ℓ is (n,).
    """
    mp = _check(marginal)

    def f(t: Any, state: tuple[Array, Array], args: Any = None) -> tuple[Array, Array]:
        x, _ = state
        out = mp.evaluate(x, t, ("vector_field", "divergence"))
        return out["vector_field"], -out["divergence"]

    return f
