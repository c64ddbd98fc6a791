"""Figures of the lecture's pictures and of a model's grade (matplotlib, imported only when called).

Every function draws with matplotlib's object API (``Figure`` with the Agg canvas, no pyplot
state) and writes a PNG atomically: a temporary file in the target folder, then ``os.replace``.
Inputs are float64 NumPy arrays; the exact objects come from a :class:`MarginalPath`.

Conventions for every figure: axes labelled x₁, x₂ (or with the quantity and its scale); one
colour scale shared by all panels of a figure, with its colour bar (densities on a log scale
spanning three decades, speeds linear); vector fields drawn only where p_t is above 10⁻³ of
its maximum at that time (arrows far outside the support are not what the model learned);
contours labelled with their value; titles naming the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import atomic_write
from .marginals import MarginalPath

__all__ = [
    "plot_conditional_path",
    "plot_coverage",
    "plot_guidance",
    "plot_loss_curve",
    "plot_loss_profile",
    "plot_marginal_path",
    "plot_samples",
    "plot_vector_fields",
    "save_figure",
    "support",
]

Field = Callable[[np.ndarray, np.ndarray], Any]

#: Densities below this fraction of their maximum are blank, and arrows there are not drawn.
SUPPORT = 1e-3


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _label(name: str, limit: int = 32) -> str:
    """A model name short enough for a title: a long ``module:function`` keeps its end."""
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 130) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (temp file in the same folder, replace)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def _check_2d(mp: MarginalPath) -> None:
    if mp.dim != 2:
        raise ValueError(f"plots need 2-D data, got d = {mp.dim}")


def extent(mp: MarginalPath) -> float:
    """Half-width of a square window holding p_data (means ± 3 sd) and p_init (± 3.5)."""
    sd = np.sqrt(mp.data.eigenvalues.max(initial=0.0))
    return float(max(np.abs(mp.data.means).max() + 3 * sd, 3.5))


def _grid(lim: float, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.linspace(-lim, lim, m)
    xx, yy = np.meshgrid(g, g)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1)


def support(mp: MarginalPath, pts: np.ndarray, t: float) -> np.ndarray:
    """Return the mask of points (m, 2) where p_t ≥ 10⁻³ of its largest value over ``pts``."""
    logp = np.asarray(mp.log_prob(pts, float(t)), dtype=np.float64)
    return logp >= logp.max() + np.log(SUPPORT)


def _densities(mp: MarginalPath, times: Sequence[float], lim: float, m: int = 160) -> list[Any]:
    pts = _grid(lim, m)[2]
    return [np.exp(np.asarray(mp.log_prob(pts, float(t)))).reshape(m, m) for t in times]


def _density_norm(dens: Sequence[np.ndarray]) -> Any:
    from matplotlib.colors import LogNorm

    top = max(float(d.max()) for d in dens)
    return LogNorm(vmin=top * SUPPORT, vmax=top, clip=True)


def _show_density(ax: Any, dens: np.ndarray, lim: float, norm: Any) -> Any:
    # Below the norm's floor the pixel is left blank (white), not the darkest colour.
    shown = np.ma.masked_less(dens, norm.vmin)
    return ax.imshow(shown, origin="lower", extent=(-lim, lim, -lim, lim), cmap="Blues", norm=norm)


def _square(ax: Any, lim: float, title: str, *, xlabel: bool = True, ylabel: bool = True) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if xlabel:
        ax.set_xlabel("x₁", fontsize=8)
    if ylabel:
        ax.set_ylabel("x₂", fontsize=8)


def plot_conditional_path(
    mp: MarginalPath,
    z: np.ndarray,
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    n: int = 500,
    rng: Any = 0,
) -> Path:
    """Draw samples of p_t(·|z) = N(α_t z, β_t² I) for one data point z at several times."""
    _check_2d(mp)
    g = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    z = np.asarray(z, dtype=np.float64).reshape(1, 2)
    lim = extent(mp)
    fig, axes = _figure(1, len(times), (2.6 * len(times), 3.0))
    for i, (ax, t) in enumerate(zip(axes[0], times, strict=True)):
        x = mp.path.sample(np.repeat(z, n, 0), float(t), g.standard_normal((n, 2)))
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, color="tab:orange")
        ax.scatter(*z[0], marker="*", s=160, facecolors="none", edgecolors="black", zorder=3)
        _square(ax, lim, f"p_t(x|z), t = {t:g}", ylabel=i == 0)
    fig.suptitle(
        f"Conditional path x = α_t z + β_t ε for one z (hollow star), {mp.schedule!r}",
        fontsize=10,
    )
    return save_figure(fig, path)


def plot_marginal_path(
    mp: MarginalPath,
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> Path:
    """Draw the exact marginal density p_t(x) at several times on one shared log colour scale."""
    _check_2d(mp)
    lim = extent(mp)
    fig, axes = _figure(1, len(times), (2.6 * len(times) + 0.8, 3.0))
    dens = _densities(mp, times, lim)
    norm = _density_norm(dens)
    im = None
    for i, (ax, t, d) in enumerate(zip(axes[0], times, dens, strict=True)):
        im = _show_density(ax, d, lim, norm)
        _square(ax, lim, f"t = {t:g}", ylabel=i == 0)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label="p_t(x) (log scale, shared)")
    fig.suptitle(f"Exact marginal probability path p_t, {mp.schedule!r}", fontsize=10)
    return save_figure(fig, path)


def plot_vector_fields(
    mp: MarginalPath,
    learned: Field,
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] = (0.0, 0.35, 0.7, 0.95),
    trajectories: tuple[np.ndarray, np.ndarray] | None = None,
    name: str = "learned u_t^θ",
) -> Path:
    """Draw the exact u_t (top) and the learned field ``name`` (bottom) as arrows over p_t.

    Arrows are drawn only where p_t(x) ≥ 10⁻³ max p_t; their colour is the speed |u| on one
    linear scale shared by every panel (up to its 99th percentile), and their length grows with
    the speed from ¼ to 1 grid cell, so every direction stays visible. ``trajectories`` =
    (exact, learned), each (T, n, 2) ODE paths from t = 0 to 1, drawn in an extra column.
    """
    _check_2d(mp)
    from matplotlib.colors import Normalize

    lim = extent(mp)
    ncol = len(times) + (trajectories is not None)
    fig, axes = _figure(2, ncol, (2.7 * ncol + 1.2, 5.9))
    _, _, pts = _grid(lim * 0.95, 19)
    dens = _densities(mp, times, lim)
    dnorm = _density_norm(dens)
    fields = (("exact u_t", mp.vector_field), (name, learned))
    panels = []
    for t in times:
        tt = np.full(pts.shape[0], float(t))
        keep = support(mp, pts, float(t))
        panels.append((keep, [np.asarray(f(pts, tt), dtype=np.float64) for _, f in fields]))
    speeds = np.concatenate([np.linalg.norm(u[k], axis=1) for k, us in panels for u in us])
    vmax = float(np.quantile(speeds, 0.99)) if speeds.size else 1.0
    snorm = Normalize(0.0, vmax)
    cell = 2 * lim * 0.95 / 18
    q = None
    im = None
    for col, (t, (keep, us), d) in enumerate(zip(times, panels, dens, strict=True)):
        for row, ((label, _), u) in enumerate(zip(fields, us, strict=True)):
            ax = axes[row][col]
            im = _show_density(ax, d, lim, dnorm)
            speed = np.linalg.norm(u, axis=1)
            arrows = _arrows(u, speed, vmax, cell)
            q = ax.quiver(
                pts[keep, 0],
                pts[keep, 1],
                arrows[keep, 0],
                arrows[keep, 1],
                speed[keep],
                cmap="plasma",
                norm=snorm,
                angles="xy",
                scale_units="xy",
                scale=1.0,
                width=0.006,
                headwidth=4,
                pivot="tail",
            )
            _square(ax, lim, f"{label}, t = {t:g}", xlabel=row == 1, ylabel=col == 0)
    if trajectories is not None:
        for row in range(2):
            ax = axes[row][-1]
            traj = trajectories[row]
            _show_density(ax, _densities(mp, [1.0], lim)[0], lim, dnorm)
            for i in range(traj.shape[1]):
                ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.7, color="tab:red", alpha=0.6)
            ax.scatter(traj[0, :, 0], traj[0, :, 1], s=5, color="black", label="t = 0")
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=5, color="tab:green", label="t = 1")
            ax.legend(fontsize=6, loc="lower right")
            who = "exact u_t" if row == 0 else name
            _square(ax, lim, f"ODE paths over p_1, {who}", xlabel=row == 1, ylabel=False)
    every = axes.ravel().tolist()
    fig.colorbar(q, ax=every, shrink=0.6, label="speed |u| (shared)")
    fig.colorbar(im, ax=every, shrink=0.6, label="p_t(x) (log, shared)")
    fig.suptitle(
        f"Exact marginal field (top) vs {_label(name)} (bottom), {mp.schedule!r}; arrows where "
        "p_t ≥ 10⁻³ max p_t, colour = speed",
        fontsize=10,
    )
    return save_figure(fig, path)


def _arrows(u: np.ndarray, speed: np.ndarray, vmax: float, cell: float) -> np.ndarray:
    """Arrows along u whose length grows with the speed from ¼ to 1 grid cell (at vmax).

    Speeds across times differ by orders of magnitude (VP is slow early, fast late); a length
    proportional to speed would shrink early arrows to dots, so the speed is read from the
    shared colour scale and the length only orders it.
    """
    frac = np.minimum(speed / vmax, 1.0) if vmax > 0 else np.zeros_like(speed)
    unit = u / np.where(speed > 0, speed, 1.0)[:, None]
    return unit * (cell * (0.25 + 0.75 * frac))[:, None]


def plot_samples(
    mp: MarginalPath,
    data: np.ndarray,
    generated: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "ODE samples of the learned field",
) -> Path:
    """Draw exact samples of p_data next to generated samples, over labelled log p_data contours.

    ``title`` names the model that produced ``generated``.
    """
    _check_2d(mp)
    lim = extent(mp)
    fig, axes = _figure(1, 2, (8.6, 4.7))
    xx, yy, pts = _grid(lim, 140)
    logp = np.asarray(mp.data.log_prob(pts)).reshape(xx.shape)
    top = float(np.max(logp))
    levels = np.round(top) - np.array([8.0, 4.0, 1.0])
    for i, (ax, x, label, color) in enumerate(
        (
            (axes[0][0], data, "exact samples z ~ p_data", "tab:blue"),
            (axes[0][1], generated, title, "tab:red"),
        )
    ):
        cs = ax.contour(xx, yy, logp, levels=levels, colors="gray", linewidths=0.6)
        ax.clabel(cs, fmt="%.0f", fontsize=6)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=color)
        _square(ax, lim, f"{label} (n = {x.shape[0]})", ylabel=i == 0)
    fig.suptitle("Samples over contours of log p_data (contour labels: log-density)", fontsize=10)
    return save_figure(fig, path)


def plot_loss_curve(
    losses: np.ndarray,
    floor: float,
    path: str | os.PathLike[str],
    *,
    eval_steps: Sequence[int] = (),
    fm_losses: Sequence[float] = (),
    relative: Sequence[float] = (),
    name: str = "MLP",
) -> Path:
    """Draw training: the CFM loss with its floor L*, the excess over L*, the relative FM loss.

    The middle panel shows the gap to the floor on a log scale (running mean of the minibatch
    CFM loss − L*, and the exact L_FM at evaluations, whose expectation it is), so it stays
    readable after convergence.
    """
    losses = np.asarray(losses, dtype=np.float64)
    fig, axes = _figure(1, 3, (14.0, 3.9))
    ax = axes[0][0]
    steps = np.arange(1, losses.size + 1)
    ax.plot(steps, losses, lw=0.4, alpha=0.3, color="tab:blue", label="minibatch CFM loss")
    # Mean over the trailing 20% of steps: a window that widens with the step, as suits log-x.
    cs = np.concatenate([[0.0], np.cumsum(losses)])
    lo = np.floor(0.8 * np.arange(losses.size)).astype(np.int64)
    hi = np.arange(1, losses.size + 1)
    smooth = (cs[hi] - cs[lo]) / (hi - lo) if losses.size else losses
    ax.plot(steps, smooth, lw=1.4, color="tab:blue", label="running mean (last 20% of steps)")
    finite = bool(np.isfinite(floor))
    if finite:
        ax.axhline(floor, color="black", ls="--", lw=1.2, label=f"L* = {floor:.3f} (floor)")
        if len(eval_steps):
            ax.plot(
                eval_steps,
                np.asarray(fm_losses) + floor,
                "o",
                ms=3,
                color="tab:red",
                label="exact L_FM + L* (= E L_CFM)",
            )
        top = float(smooth.max()) if losses.size else 2 * floor
        ax.set_ylim(0.8 * floor, max(top * 1.05, 1.3 * floor))
        ax.set_title("CFM loss and its irreducible floor", fontsize=9)
    else:
        ax.set_title("CFM loss; L* is infinite for this schedule", fontsize=9)
        ax.set_yscale("log")  # heavy-tailed minibatch losses: show spikes and the mean alike
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (sum over coordinates)")
    ax.legend(fontsize=7)
    ax1 = axes[0][1]
    if finite:
        excess = smooth - floor
        ok = excess > 0
        ax1.plot(steps[ok], excess[ok], lw=1.2, color="tab:blue", label="running mean − L*")
    if len(eval_steps):
        ax1.plot(eval_steps, fm_losses, "o-", ms=3, color="tab:red", label="exact L_FM")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("excess loss over L* (log)")
    ax1.set_title("Gap to the floor (E L_CFM − L* = L_FM)", fontsize=9)
    if finite or len(eval_steps):
        ax1.legend(fontsize=7)
    else:
        ax1.text(
            0.5, 0.5, "L* infinite: no floor to subtract", ha="center", transform=ax1.transAxes
        )
    ax2 = axes[0][2]
    if len(eval_steps):
        ax2.loglog(eval_steps, relative, "o-", ms=3, color="tab:red", label="L_FM / E‖u_t‖²")
        ax2.axhline(0.10, color="gray", ls=":", lw=1, label="0.10")
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, "no exact evaluations", ha="center", transform=ax2.transAxes)
    ax2.set_xlabel("step")
    ax2.set_ylabel("relative FM loss (log)")
    ax2.set_title("Relative FM loss", fontsize=9)
    what = "approaches the irreducible floor L*" if finite else "has no finite floor here"
    fig.suptitle(f"Training {_label(name)}: the CFM loss {what}", fontsize=10)
    return save_figure(fig, path)


def plot_loss_profile(
    fm: Any, floor: Any, path: str | os.PathLike[str], *, name: str = "model"
) -> Path:
    """Draw the per-t FM loss L_FM(t) of a model and the floor ℓ*(t), log scale, ± 2 stderr.

    ``fm`` and ``floor`` are :class:`~fmref.losses.LossEstimate` on the same time bins.
    """
    fig, axes = _figure(1, 1, (6.0, 3.8))
    ax = axes[0][0]
    mid = 0.5 * (fm.t_edges[1:] + fm.t_edges[:-1])
    width = np.diff(fm.t_edges)
    for est, label, color in (
        (fm, f"L_FM(t) of {_label(name)}", "tab:red"),
        (floor, "ℓ*(t) floor", "black"),
    ):
        ok = np.isfinite(est.profile) & (est.profile > 0)
        if ok.any():
            err = 2 * np.nan_to_num(est.profile_stderr[ok])
            lower = np.minimum(err, 0.9 * est.profile[ok])  # keep log-scale bars above 0
            ax.errorbar(
                mid[ok],
                est.profile[ok],
                yerr=(lower, err),
                xerr=width[ok] / 2,
                fmt="o",
                ms=3,
                color=color,
                label=label,
                capsize=2,
            )
    ax.set_yscale("log")
    ax.set_xlabel("t (0 noise, 1 data)")
    ax.set_ylabel("loss per t (sum over coordinates, log)")
    ax.legend(fontsize=7)
    rel = fm.relative
    sub = f"relative FM loss {rel:.3g} ± {fm.relative_stderr:.1g}" if rel is not None else ""
    ax.set_title(f"Where {_label(name)} errs in time: {sub}", fontsize=9)
    return save_figure(fig, path)


def plot_coverage(
    shares: np.ndarray,
    expected: np.ndarray,
    stderr: np.ndarray,
    path: str | os.PathLike[str],
    *,
    name: str = "model",
) -> Path:
    """Draw each component's share of the model's samples (± 2 stderr) against exact samples'."""
    k = np.arange(len(shares))
    fig, axes = _figure(1, 1, (max(4.0, 0.6 * len(shares) + 2.0), 3.6))
    ax = axes[0][0]
    ax.bar(
        k, shares, yerr=2 * np.asarray(stderr), color="tab:red", alpha=0.7, capsize=3, label=name
    )
    ax.scatter(k, expected, marker="_", s=400, color="black", zorder=3, label="exact samples")
    ax.set_xticks(k)
    ax.set_xlabel("mixture component k")
    ax.set_ylabel("share of samples (most likely k)")
    ax.legend(fontsize=7)
    ax.set_title(f"Per-mode coverage of {_label(name)} (bars ± 2 stderr)", fontsize=9)
    return save_figure(fig, path)


def plot_guidance(
    mp: MarginalPath,
    y: int,
    rows: Sequence[dict[str, Any]],
    reference: np.ndarray,
    path: str | os.PathLike[str],
) -> Path:
    """Draw learned vs exact classifier-free-guidance samples against p_data(· | y).

    ``rows``: one dict per guidance weight with ``w``, ``x_learned`` and ``x_exact`` (n, 2)
    CFG ODE samples, and optionally ``kl_learned``/``kl_exact`` (KL to q^w_1) and the
    ``learned``/``exact`` mode frequencies ``mode_freq`` (as :func:`fmref.demo.measure_guidance`
    returns). ``reference``: exact draws of p_data(· | y). The first column shows p_data(· | y)
    (draws over its density), then one column per weight: learned samples (top), exact CFG
    samples (bottom), both over contours of log p_data(· | y).
    """
    _check_2d(mp)
    cond = mp.data.given(y)
    lim = extent(mp)
    fig, axes = _figure(2, len(rows) + 1, (2.9 * (len(rows) + 1), 6.2))
    xx, yy, pts = _grid(lim, 160)
    logp = np.asarray(cond.log_prob(pts)).reshape(xx.shape)
    levels = np.max(logp) - np.array([8.0, 4.0, 1.0])
    ax = axes[0][0]
    ax.imshow(np.exp(logp), origin="lower", extent=(-lim, lim, -lim, lim), cmap="Blues")
    _square(ax, lim, f"p_data(x | y = {y})")
    ax = axes[1][0]
    ax.contour(xx, yy, logp, levels=levels, colors="gray", linewidths=0.6)
    ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.4, color="tab:blue")
    freq = " ".join(f"{v:.2f}" for v in cond.weights)
    _square(ax, lim, f"exact draws of p_data(x | y)\nmode weights {freq}")
    for j, r in enumerate(rows, start=1):
        for i, (key, name, color) in enumerate(
            (("learned", "learned CFG (MLP)", "tab:red"), ("exact", "exact CFG", "black"))
        ):
            x = np.asarray(r[f"x_{key}"])
            ax = axes[i][j]
            ax.contour(xx, yy, logp, levels=levels, colors="gray", linewidths=0.6)
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=color)
            title = f"{name}, w = {r['w']:g}"
            if f"kl_{key}" in r:
                title += f"\nKL to q^w_1 = {r[f'kl_{key}']:.3f}"
            if key in r and "mode_freq" in r[key]:
                title += "\nmodes " + " ".join(f"{v:.2f}" for v in r[key]["mode_freq"])
            _square(ax, lim, title)
    fig.suptitle(
        f"Classifier-free guidance, (1 − w) u(x) + w u(x | y), class y = {y}: learned (top) "
        "vs exact (bottom)",
        fontsize=10,
    )
    return save_figure(fig, path)
