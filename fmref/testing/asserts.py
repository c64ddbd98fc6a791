"""Assert that a user's implementation (any array library) matches fmref's exact quantities.

Every helper draws points where the density is not negligible (exact samples of p_t or
p_data), converts them to the user's library (``like=`` an example array, or ``to_impl=`` a
NumPy → array converter), calls the user's function, brings the result back to NumPy (DLPack
or the namespace) and compares it with the exact value *at the inputs as the user saw them*
(float32 rounding of x and t is not counted as the user's error). Failures raise
``AssertionError`` naming the worst point, its t, the expected and actual values and the error
relative to the tolerance. Tolerances default by the output dtype (table in ``fmref.testing``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..marginals import MarginalPath, canonical_quantities
from ..mixtures import GaussianMixture, rng_from
from ..paths import GaussianPath
from ..schedules import Schedule
from ._compare import (
    Converter,
    back,
    check,
    check_n,
    check_q,
    converter,
    default_tolerance,
    fmt,
    user_inputs,
    valid_times,
)

__all__ = [
    "assert_conditional_path_close",
    "assert_log_likelihood_close",
    "assert_quantity_close",
    "assert_score_close",
    "assert_vector_field_close",
]


def assert_quantity_close(
    fn: Callable[[Any, Any], Any],
    marginal: MarginalPath,
    quantity: str,
    *,
    n: int = 64,
    times: Sequence[float] | None = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
    quantile: float = 1.0,
    _caller: str | None = None,
) -> None:
    """Assert ``fn(x, t)`` equals the exact ``quantity`` of ``marginal`` at x ~ p_t.

    ``fn`` receives x of shape (m, d) and t of shape (m,) (per-row times, m = n·len(times)) in
    the user's library and returns the quantity's shape with n = m: ``quantity`` is any name of
    :data:`fmref.marginals.QUANTITY_INFO`, whose record gives the shape (0.1's
    ``"x_hat"``/``"eps_hat"`` are deprecated aliases). Default ``times`` are 0, ¼, ½, ¾, 1,
    less those where the quantity is undefined (t = 1 for Dirac data or cfm_floor_integrand).
    ``quantile`` < 1 (for learned fields) requires only that fraction of points to be within
    tolerance; the worst is still reported.
    """
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be an fmref MarginalPath, got {type(marginal).__name__}")
    if not isinstance(quantity, str):
        raise TypeError(f"quantity must be a str, got {type(quantity).__name__}")
    (quantity,) = canonical_quantities(quantity, name="quantity", stacklevel=2)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    n, quantile = check_n(n), check_q(quantile)
    g = rng_from(rng)
    d = marginal.dim

    def ok(t: float) -> bool:
        try:
            marginal.evaluate(np.zeros((1, d)), t, (quantity,))
        except ValueError:
            return False
        return True

    ts = valid_times(times, ok)
    x = np.concatenate([marginal.sample(n, t, rng=g) for t in ts], axis=0)
    t_all = np.repeat(np.asarray(ts), n)
    conv = converter(like, to_impl)
    xu, xs = user_inputs(conv, x)
    tu, tsn = user_inputs(conv, t_all)
    tsn = np.clip(tsn, 0.0, 1.0)
    expected = np.asarray(marginal.evaluate(xs, tsn, (quantity,))[quantity], dtype=np.float64)
    out = fn(xu, tu)
    rt, at = default_tolerance(getattr(out, "dtype", np.float64), rtol, atol)
    actual = back(out, "fn", expected.shape)
    check(
        _caller or f"assert_quantity_close[{quantity}]",
        actual,
        expected,
        rt,
        at,
        quantile,
        lambda i: f"t = {tsn[i]:.10g}, x = {fmt(xs[i])}",
    )


def assert_vector_field_close(
    fn: Callable[[Any, Any], Any], marginal: MarginalPath, **kwargs: Any
) -> None:
    """Assert ``fn(x, t)`` (shape (m, d)) equals the exact marginal field u_t(x) at x ~ p_t.

    Keywords as :func:`assert_quantity_close` (n, times, rng, rtol, atol, like, to_impl,
    quantile). For a trained network pass loose ``atol``/``rtol`` and perhaps ``quantile``.
    """
    assert_quantity_close(
        fn, marginal, "vector_field", _caller="assert_vector_field_close", **kwargs
    )


def assert_score_close(
    fn: Callable[[Any, Any], Any], marginal: MarginalPath, **kwargs: Any
) -> None:
    """Assert ``fn(x, t)`` (shape (m, d)) equals the exact score ∇log p_t(x) at x ~ p_t."""
    assert_quantity_close(fn, marginal, "score", _caller="assert_score_close", **kwargs)


def assert_conditional_path_close(
    sample_fn: Callable[[Any, Any, Any], Any] | None,
    target_fn: Callable[[Any, Any, Any], Any] | None,
    path: GaussianPath | Schedule,
    *,
    data: GaussianMixture | None = None,
    n: int = 64,
    times: Sequence[float] | None = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
) -> None:
    """Assert a user's path sampler and regression target match fmref's, given the same z, ε, t.

    ``sample_fn(z, eps, t)`` must return x_t = α_t z + β_t ε and ``target_fn(z, eps, t)`` the
    CFM target α̇_t z + β̇_t ε; z, ε have shape (m, d), t shape (m,). Either may be None.
    z ~ ``data`` (default N(0, 4 I) in d = 2), ε ~ N(0, I). Default times 0, 0.2, …, 1, less
    t = 1 for the target where β̇ is infinite there.
    """
    if isinstance(path, Schedule):
        path = GaussianPath(path)
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be a GaussianPath or Schedule, got {type(path).__name__}")
    if sample_fn is None and target_fn is None:
        raise ValueError("give at least one of sample_fn and target_fn")
    for nm, f in (("sample_fn", sample_fn), ("target_fn", target_fn)):
        if f is not None and not callable(f):
            raise TypeError(f"{nm} must be callable or None, got {type(f).__name__}")
    if data is None:
        data = GaussianMixture.gaussian(np.zeros(2), 4.0)
    if not isinstance(data, GaussianMixture):
        raise TypeError(f"data must be a GaussianMixture or None, got {type(data).__name__}")
    n = check_n(n)
    g = rng_from(rng)
    one = np.zeros((1, data.dim))

    def ok(t: float) -> bool:
        if target_fn is None:
            return True
        try:
            _ = path.draw(one, t, eps=one).target
        except ValueError:
            return False
        return True

    ts = valid_times(times, ok, (0.0, 0.2, 0.4, 0.6, 0.8, 1.0))
    m = n * len(ts)
    z = data.sample(m, rng=g)
    eps = g.standard_normal(z.shape)
    t_all = np.repeat(np.asarray(ts), n)
    conv = converter(like, to_impl)
    (zu, zs), (eu, es), (tu, tsn) = (user_inputs(conv, a) for a in (z, eps, t_all))
    exact = path.draw(zs, np.clip(tsn, 0.0, 1.0), eps=es)

    def ctx(i: int) -> str:
        return f"t = {exact.t[i]:.10g}, z = {fmt(zs[i])}, eps = {fmt(es[i])}"

    for name, f, attr in (("sample_fn", sample_fn, "x"), ("target_fn", target_fn, "target")):
        if f is None:
            continue
        out = f(zu, eu, tu)
        rt, at = default_tolerance(getattr(out, "dtype", np.float64), rtol, atol)
        expected = np.asarray(getattr(exact, attr), dtype=np.float64)
        check(
            f"assert_conditional_path_close[{name}]",
            back(out, name, expected.shape),
            expected,
            rt,
            at,
            1.0,
            ctx,
        )


def assert_log_likelihood_close(
    fn: Callable[[Any], Any],
    model: MarginalPath | GaussianMixture,
    *,
    n: int = 64,
    x: Any = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
    quantile: float = 1.0,
) -> None:
    """Assert ``fn(x)`` (shape (n,)) equals the exact log p_data(x) at x ~ p_data (or at ``x``).

    For a flow's likelihood (log p_0(X_0) − ∫ div u_t dt along the ODE) ``model`` is the
    MarginalPath whose field the flow integrates, or the GaussianMixture p_data. Default
    tolerances are 100× the table's: an ODE solve's error dominates rounding.
    """
    data = model.data if isinstance(model, MarginalPath) else model
    if not isinstance(data, GaussianMixture):
        raise TypeError(
            f"model must be a MarginalPath or GaussianMixture, got {type(model).__name__}"
        )
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    quantile = check_q(quantile)
    if x is None:
        x = data.sample(check_n(n), rng=rng_from(rng))
    x = np.asarray(back(x, "x", tuple(np.shape(x))), dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != data.dim:
        raise ValueError(f"x must have shape (n, {data.dim}), got {x.shape}")
    xu, xs = user_inputs(converter(like, to_impl), x)
    expected = np.asarray(data.log_prob(xs), dtype=np.float64)
    out = fn(xu)
    rt, at = default_tolerance(getattr(out, "dtype", np.float64), rtol, atol, scale=100.0)
    check(
        "assert_log_likelihood_close",
        back(out, "fn", expected.shape),
        expected,
        rt,
        at,
        quantile,
        lambda i: f"x = {fmt(xs[i])} (t = 1)",
    )
