"""Assert that a user's implementation (any array library) matches fmref's exact quantities.

The default test design reaches where bugs hide: times near both ends (0, 10⁻³, 10⁻², ¼, ½, ¾,
0.99, 0.999, 1, less those where the quantity is undefined), and at each time exact samples
of p_t *and* tail points 10–50 standard deviations from every mode (where a softmax without
max-subtraction turns NaN). ``x=`` replaces the drawn points by the user's own. The helpers
convert the points to the user's library (``like=`` an example array, or ``to_impl=`` a NumPy →
array converter), call the user's function, bring the result back to NumPy (DLPack or the
namespace) and compare it with the exact value *at the inputs as the user saw them* (float32
rounding of x and t is not counted as the user's error).

Precision policy: the precision a test asks for is ``precision=``, else the dtype of ``like``
(or of the converted inputs); never the dtype the function returns. A result of lower
precision than asked fails, saying so; tolerances default by the asked precision
(:data:`fmref.testing.TOLERANCES`), plus a conditioning allowance where the exact answer is
ill-conditioned (:mod:`fmref.testing._compare`). Failures raise ``AssertionError`` naming the
worst point, its t, the expected and actual values, the error relative to the tolerance and
the count of failing points at each time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._check import check_int
from .._xp import namespace
from ..guidance import CFG
from ..marginals import QUANTITY_INFO, MarginalPath, canonical_quantities
from ..mixtures import GaussianMixture, rng_from
from ..paths import GaussianPath
from ..schedules import Schedule
from ._cases import conditioning, oracle_mixture, tail_points
from ._compare import (
    Converter,
    allowance,
    asked_precision,
    back,
    check,
    check_n,
    check_precision,
    check_q,
    converter,
    default_tolerance,
    fmt,
    sensitivity,
    user_inputs,
    valid_times,
)

__all__ = [
    "assert_cfg_close",
    "assert_conditional_path_close",
    "assert_log_likelihood_close",
    "assert_quantity_close",
    "assert_score_close",
    "assert_vector_field_close",
]

#: Default times of the conditional-path check (less t = 1 where β̇ is infinite).
PATH_TIMES = (0.0, 1e-3, 1e-2, 0.2, 0.4, 0.6, 0.8, 0.99, 0.999, 1.0)

#: expected(marginal, x, t, y) → the exact values (y None when unlabelled).
Expected = Callable[[MarginalPath, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def _labels(y: Any, x_given: bool, m: int | None) -> list[Any] | None:
    """``y=`` as blocks of labels: [None] unlabelled, else one entry per block of points."""
    if y is None:
        return None
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return [int(y)]
    arr = np.asarray(y)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1:
        raise TypeError(f"y must be an int label or a 1-D sequence of int labels, got {y!r}")
    if arr.size == 0:
        raise ValueError("y must not be empty")
    if x_given:
        if arr.shape[0] != m:
            raise ValueError(
                f"y with x= must be one label or one per row of x ({m}), got {arr.size}"
            )
        return [arr.astype(np.int64)]
    return [int(v) for v in arr]


def _design(
    marginal: MarginalPath,
    ts: list[float],
    n: int,
    tails: int,
    g: np.random.Generator,
    x: np.ndarray | None,
    blocks: list[Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Points, per-row times, per-row labels and tail flags of one check, grouped by time."""
    xs, tl, ys, tails_ = [], [], [], []
    for t in ts:
        for lab in blocks or [None]:
            if x is not None:
                pts, tail = x, np.zeros(x.shape[0], dtype=bool)
                yy = None if lab is None else np.broadcast_to(lab, (x.shape[0],))
            else:
                pts = np.asarray(marginal.sample(n, t, rng=g, y=lab))
                if tails:
                    pts = np.concatenate([pts, tail_points(marginal, t, tails, g)])
                tail = np.r_[np.zeros(n, dtype=bool), np.ones(tails, dtype=bool)]
                yy = None if lab is None else np.full(n + tails, lab)
            xs.append(pts)
            tl.append(np.full(pts.shape[0], t))
            tails_.append(tail)
            if yy is not None:
                ys.append(np.asarray(yy, dtype=np.int64))
    return (
        np.concatenate(xs),
        np.concatenate(tl),
        np.concatenate(ys) if ys else None,
        np.concatenate(tails_),
    )


def _user_labels(conv: Converter, like: Any, xu: Any, y: np.ndarray) -> Any:
    """Labels in the user's library as integers (the namespace of ``like`` or of x)."""
    if like is None and isinstance(xu, np.ndarray):
        return y.copy()
    xp = namespace(like if like is not None else xu)
    try:
        return xp.asarray(y, device=getattr(xu, "device", None))
    except TypeError:
        return xp.asarray(y)


def _field_check(
    caller: str,
    fn: Callable[..., Any],
    marginal: MarginalPath,
    expected_of: Expected,
    defined: Callable[[float, Any], bool],
    *,
    n: int,
    times: Sequence[float] | None,
    x: Any,
    y: Any,
    tails: int | None,
    rng: Any,
    rtol: float | None,
    atol: float | None,
    like: Any,
    to_impl: Converter | None,
    precision: Any,
    quantile: float,
) -> None:
    """The one driver of the (x, t[, y]) checks: design, conversion, precision, comparison."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    n, quantile = check_n(n), check_q(quantile)
    if tails is None:
        tails = max(1, n // 4) if quantile == 1.0 else 0  # learned fields are not trained there
    tails = check_int(tails, "tails", low=0)
    g = rng_from(rng)
    d = marginal.dim
    xa = None
    if x is not None:
        xa = np.asarray(back(x, "x", tuple(np.shape(x))), dtype=np.float64)
        if xa.ndim != 2 or xa.shape[1] != d or xa.shape[0] == 0:
            raise ValueError(f"x must have shape (m, {d}) with m >= 1, got {xa.shape}")
    blocks = _labels(y, xa is not None, None if xa is None else xa.shape[0])
    first = None if blocks is None else np.asarray(blocks[0]).reshape(-1)[:1]
    ts = valid_times(times, lambda t: defined(t, first))
    if not ts:
        raise ValueError(f"{caller}: the quantity is undefined at every default time")
    pts, t_all, y_all, tail = _design(marginal, ts, n, tails, g, xa, blocks)
    conv = converter(like, to_impl)
    xu, xs = user_inputs(conv, pts)
    tu, tsn = user_inputs(conv, t_all)
    tsn = np.clip(tsn, 0.0, 1.0)
    asked = asked_precision(precision, like, xu)
    expected = np.asarray(expected_of(marginal, xs, tsn, y_all), dtype=np.float64)
    out = fn(xu, tu) if y_all is None else fn(xu, tu, _user_labels(conv, like, xu, y_all))
    check_precision(caller, out, asked)
    rt, at = default_tolerance(asked, rtol, atol)
    actual = back(out, "fn", expected.shape)
    sens = conditioning(
        marginal, lambda mp, a, b: expected_of(mp, a, b, y_all), (xs, tsn), time_index=1
    )

    def ctx(i: int) -> str:
        lab = "" if y_all is None else f", y = {int(y_all[i])}"
        where = " (a tail point, far from every mode)" if tail[i] else ""
        return f"t = {tsn[i]:.10g}, x = {fmt(xs[i])}{lab}{where}"

    check(
        caller,
        actual,
        expected,
        rt,
        at,
        quantile,
        ctx,
        t=tsn,
        extra=allowance(sens, asked),
        precision=asked,
    )


def _defined(marginal: MarginalPath, names: tuple[str, ...]) -> Callable[[float, Any], bool]:
    one = np.zeros((1, marginal.dim))

    def ok(t: float, y: Any) -> bool:
        try:
            marginal.evaluate(one, t, names, y=y)
        except ValueError:
            return False
        return True

    return ok


def assert_quantity_close(
    fn: Callable[..., Any],
    marginal: MarginalPath,
    quantity: str,
    *,
    n: int = 64,
    times: Sequence[float] | None = None,
    x: Any = None,
    y: Any = None,
    tails: int | None = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
    precision: Any = None,
    quantile: float = 1.0,
    _caller: str | None = None,
) -> None:
    """Assert ``fn(x, t)`` equals the exact ``quantity`` of ``marginal`` at the test design.

    ``fn`` receives x of shape (m, d) and per-row times t of shape (m,) in the user's library
    (with ``y=``, also per-row integer labels: ``fn(x, t, y)``) and returns the quantity's
    shape with n = m: ``quantity`` is any name of :data:`fmref.marginals.QUANTITY_INFO`, whose
    record gives the shape (0.1's ``"x_hat"``/``"eps_hat"`` are deprecated aliases).

    Parameters
    ----------
    n : exact samples of p_t (of p_t(· | y) per label) at each time.
    times : default 0, 1e-3, 1e-2, ¼, ½, ¾, 0.99, 0.999, 1, less those where the quantity is
        undefined (t = 1 for Dirac data or cfm_floor_integrand).
    x : explicit points (m, d) (any library), checked at every time instead of the drawn ones.
    y : labelled data only: a label, or a sequence of labels (each gets its own points); with
        ``x=``, one label or one per row of x. Then the quantity is that of p_t(· | y), and
        the exact classifier quantities (``classifier_log_prob``, ``classifier_score``) need it.
    tails : tail points per time (and label), 10–50 standard deviations from every mode;
        default n // 4 (at least 1), or 0 when ``quantile`` < 1 (a learned field is not
        trained there).
    rtol, atol : default by the asked precision (:data:`fmref.testing.TOLERANCES`).
    like, to_impl : the user's array library (an example array, or a NumPy → array converter).
    precision : the precision asked for ("float64", "float32", ... or a dtype); default the
        dtype of ``like`` or of the converted inputs (float64 for NumPy). A result of lower
        precision fails.
    quantile : < 1 (learned fields) requires only that fraction of points within tolerance;
        the worst is still reported.
    """
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be an fmref MarginalPath, got {type(marginal).__name__}")
    if not isinstance(quantity, str):
        raise TypeError(f"quantity must be a str, got {type(quantity).__name__}")
    (quantity,) = canonical_quantities(quantity, name="quantity", stacklevel=2)
    if QUANTITY_INFO[quantity].given_y and y is None:
        raise ValueError(f"quantity {quantity!r} is a classifier quantity: pass y= (labels)")
    if y is not None and marginal.data.labels is None:
        raise ValueError("y: the marginal's data has no labels (GaussianMixture(labels=...))")

    def expected_of(
        mp: MarginalPath, xs: np.ndarray, ts: np.ndarray, ys: np.ndarray | None
    ) -> np.ndarray:
        return np.asarray(mp.evaluate(xs, ts, (quantity,), y=ys)[quantity])

    _field_check(
        _caller or f"assert_quantity_close[{quantity}]",
        fn,
        marginal,
        expected_of,
        _defined(marginal, (quantity,)),
        n=n,
        times=times,
        x=x,
        y=y,
        tails=tails,
        rng=rng,
        rtol=rtol,
        atol=atol,
        like=like,
        to_impl=to_impl,
        precision=precision,
        quantile=quantile,
    )


def assert_vector_field_close(
    fn: Callable[..., Any], marginal: MarginalPath, **kwargs: Any
) -> None:
    """Assert ``fn(x, t)`` (shape (m, d)) equals the exact marginal field u_t(x).

    Keywords as :func:`assert_quantity_close` (n, times, x, y, tails, rng, rtol, atol, like,
    to_impl, precision, quantile). With ``y=`` it is the conditional field u_t(x | y) and
    ``fn(x, t, y)``. For a trained network pass loose ``atol``/``rtol`` and perhaps
    ``quantile``.
    """
    assert_quantity_close(
        fn, marginal, "vector_field", _caller="assert_vector_field_close", **kwargs
    )


def assert_score_close(fn: Callable[..., Any], marginal: MarginalPath, **kwargs: Any) -> None:
    """Assert ``fn(x, t)`` (shape (m, d)) equals the exact score ∇log p_t(x) (given y with y=)."""
    assert_quantity_close(fn, marginal, "score", _caller="assert_score_close", **kwargs)


def assert_cfg_close(
    fn: Callable[[Any, Any, Any], Any],
    marginal: MarginalPath,
    *,
    y: Any,
    w: float,
    n: int = 64,
    times: Sequence[float] | None = None,
    x: Any = None,
    tails: int | None = None,
    rng: Any = 0,
    rtol: float | None = None,
    atol: float | None = None,
    like: Any = None,
    to_impl: Converter | None = None,
    precision: Any = None,
    quantile: float = 1.0,
) -> None:
    """Assert ``fn(x, t, y)`` equals the exact CFG field (1 − w) u_t(x) + w u_t(x | y).

    The guided field of :class:`fmref.guidance.CFG` (weight convention there; a diffusers
    ``guidance_scale`` ω is w = ω, Ho & Salimans' ω is w = 1 + ω:
    :func:`fmref.guidance.guidance_weight`). Points are exact samples of p_t(· | y) (guided
    trajectories live there) and tail points; ``y`` as in :func:`assert_quantity_close`, the
    other keywords too.
    """
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be an fmref MarginalPath, got {type(marginal).__name__}")
    CFG(marginal, 0 if marginal.data.labels is None else int(marginal.data.classes[0]), w)
    if y is None:
        raise ValueError("y must be a label or a sequence of labels, got None")

    def expected_of(
        mp: MarginalPath, xs: np.ndarray, ts: np.ndarray, ys: np.ndarray | None
    ) -> np.ndarray:
        return np.asarray(CFG(mp, ys, w).vector_field(xs, ts))

    _field_check(
        "assert_cfg_close",
        fn,
        marginal,
        expected_of,
        _defined(marginal, ("vector_field",)),
        n=n,
        times=times,
        x=x,
        y=y,
        tails=tails,
        rng=rng,
        rtol=rtol,
        atol=atol,
        like=like,
        to_impl=to_impl,
        precision=precision,
        quantile=quantile,
    )


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
    precision: Any = None,
) -> None:
    """Assert a user's path sampler and regression target match fmref's, given the same z, ε, t.

    ``sample_fn(z, eps, t)`` must return x_t = α_t z + β_t ε and ``target_fn(z, eps, t)`` the
    CFM target α̇_t z + β̇_t ε; z, ε have shape (m, d), t shape (m,). Either may be None.
    z ~ ``data`` (default :func:`fmref.testing.oracle_mixture` in d = 2: unequal weights, full
    covariances), ε ~ N(0, I). Default times 0, 1e-3, 1e-2, 0.2, 0.4, 0.6, 0.8, 0.99, 0.999, 1,
    less t = 1 for the target where β̇ is infinite. ``precision`` as in
    :func:`assert_quantity_close`.
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
        data = oracle_mixture(2)
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

    ts = valid_times(times, ok, PATH_TIMES)
    m = n * len(ts)
    z = data.sample(m, rng=g)
    eps = g.standard_normal(z.shape)
    t_all = np.repeat(np.asarray(ts), n)
    conv = converter(like, to_impl)
    (zu, zs), (eu, es), (tu, tsn) = (user_inputs(conv, a) for a in (z, eps, t_all))
    tsn = np.clip(tsn, 0.0, 1.0)
    asked = asked_precision(precision, like, zu)
    rt, at = default_tolerance(asked, rtol, atol)

    def exact(attr: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        return lambda zz, ee, tt: np.asarray(getattr(path.draw(zz, tt, eps=ee), attr))

    def ctx(i: int) -> str:
        return f"t = {tsn[i]:.10g}, z = {fmt(zs[i])}, eps = {fmt(es[i])}"

    for name, f, attr in (("sample_fn", sample_fn, "x"), ("target_fn", target_fn, "target")):
        if f is None:
            continue
        out = f(zu, eu, tu)
        caller = f"assert_conditional_path_close[{name}]"
        check_precision(caller, out, asked)
        expected = np.asarray(exact(attr)(zs, es, tsn), dtype=np.float64)
        sens = sensitivity(exact(attr), (zs, es, tsn), time_index=2)
        check(
            caller,
            back(out, name, expected.shape),
            expected,
            rt,
            at,
            1.0,
            ctx,
            t=tsn,
            extra=allowance(sens, asked),
            precision=asked,
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
    precision: Any = None,
    quantile: float = 1.0,
) -> None:
    """Assert ``fn(x)`` (shape (n,)) equals the exact log p_data(x) at x ~ p_data (or at ``x``).

    For a flow's likelihood (log p_0(X_0) − ∫ div u_t dt along the ODE) ``model`` is the
    MarginalPath whose field the flow integrates, or the GaussianMixture p_data. Default
    tolerances are 100× the table's: an ODE solve's error dominates rounding. ``precision``
    as in :func:`assert_quantity_close` (a float32 result of a float64 test fails).
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
    asked = asked_precision(precision, like, xu)
    expected = np.asarray(data.log_prob(xs), dtype=np.float64)
    out = fn(xu)
    check_precision("assert_log_likelihood_close", out, asked)
    rt, at = default_tolerance(asked, rtol, atol, scale=100.0)
    check(
        "assert_log_likelihood_close",
        back(out, "fn", expected.shape),
        expected,
        rt,
        at,
        quantile,
        lambda i: f"x = {fmt(xs[i])} (t = 1)",
        precision=asked,
    )
