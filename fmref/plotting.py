"""Figures of the lecture's pictures for 2-D data (matplotlib, imported only when called).

Every function draws with matplotlib's object API (``Figure`` with the Agg canvas, no pyplot
state) and writes a PNG atomically: a temporary file in the target folder, then ``os.replace``.
Inputs are float64 NumPy arrays; the exact objects come from a :class:`MarginalPath`.
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
    "plot_guidance",
    "plot_loss_curve",
    "plot_marginal_path",
    "plot_samples",
    "plot_vector_fields",
    "save_figure",
]

Field = Callable[[np.ndarray, np.ndarray], Any]


def _figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
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


def _density(ax: Any, mp: MarginalPath, t: float, lim: float, m: int = 160) -> None:
    pts = _grid(lim, m)[2]
    logp = np.asarray(mp.log_prob(pts, float(t))).reshape(m, m)
    ax.imshow(np.exp(logp), origin="lower", extent=(-lim, lim, -lim, lim), cmap="Blues")


def _square(ax: Any, lim: float, title: str) -> None:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


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
    fig, axes = _figure(1, len(times), (2.6 * len(times), 2.9))
    for ax, t in zip(axes[0], times, strict=True):
        x = mp.path.sample(np.repeat(z, n, 0), float(t), g.standard_normal((n, 2)))
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, color="tab:orange")
        ax.scatter(*z[0], marker="*", s=160, facecolors="none", edgecolors="black", zorder=3)
        _square(ax, lim, f"p_t(x|z), t = {t:g}")
    fig.suptitle(
        "Conditional path x = α_t z + β_t ε for one z (hollow star), reached by all at t = 1",
        fontsize=10,
    )
    return save_figure(fig, path)


def plot_marginal_path(
    mp: MarginalPath,
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> Path:
    """Draw the exact marginal density p_t(x) as an image at several times."""
    _check_2d(mp)
    lim = extent(mp)
    fig, axes = _figure(1, len(times), (2.6 * len(times), 2.9))
    for ax, t in zip(axes[0], times, strict=True):
        _density(ax, mp, float(t), lim)
        _square(ax, lim, f"exact p_t, t = {t:g}")
    fig.suptitle("Marginal probability path p_t (exact density)", fontsize=10)
    return save_figure(fig, path)


def plot_vector_fields(
    mp: MarginalPath,
    learned: Field,
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] = (0.0, 0.35, 0.7, 0.95),
    trajectories: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Draw the exact u_t (top) and the learned u_t^θ (bottom) as arrows over p_t.

    ``trajectories`` = (exact, learned), each (T, n, 2) ODE paths from t = 0 to 1, drawn in
    an extra last column.
    """
    _check_2d(mp)
    lim = extent(mp)
    ncol = len(times) + (trajectories is not None)
    fig, axes = _figure(2, ncol, (2.7 * ncol, 5.6))
    _, _, pts = _grid(lim * 0.95, 17)
    fields = (("exact u_t", mp.vector_field), ("learned", learned))
    for col, t in enumerate(times):
        tt = np.full(pts.shape[0], float(t))
        us = [np.asarray(f(pts, tt), dtype=np.float64) for _, f in fields]
        # One colour scale per time, shared by both rows, so the speeds compare directly.
        vmax = max(float(np.linalg.norm(u, axis=1).max()) for u in us)
        for row, ((name, _), u) in enumerate(zip(fields, us, strict=True)):
            ax = axes[row][col]
            _density(ax, mp, float(t), lim)
            speed = np.linalg.norm(u, axis=1)
            ax.quiver(
                pts[:, 0],
                pts[:, 1],
                u[:, 0],
                u[:, 1],
                speed,
                cmap="plasma",
                clim=(0.0, vmax),
                angles="xy",
                scale_units="xy",
                scale=8.0,
                width=0.005,
                headwidth=4,
                pivot="tail",
            )
            _square(ax, lim, f"{name}, t = {t:g}")
    for row in range(2 if trajectories is not None else 0):
        if trajectories is not None:
            ax = axes[row][-1]
            traj = trajectories[row]
            _density(ax, mp, 1.0, lim)
            for i in range(traj.shape[1]):
                ax.plot(traj[:, i, 0], traj[:, i, 1], lw=0.7, color="tab:red", alpha=0.6)
            ax.scatter(traj[0, :, 0], traj[0, :, 1], s=5, color="black", label="t = 0")
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=5, color="tab:green", label="t = 1")
            ax.legend(fontsize=6, loc="lower right")
            _square(ax, lim, f"ODE trajectories ({'exact' if row == 0 else 'learned'})")
    fig.suptitle(
        "Exact marginal vector field (top) vs learned u_t^θ (bottom); arrows and colour:"
        " speed, one scale per time",
        fontsize=10,
    )
    return save_figure(fig, path)


def plot_samples(
    mp: MarginalPath,
    data: np.ndarray,
    generated: np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "ODE samples of the learned field",
) -> Path:
    """Draw exact samples of p_data next to generated samples, over log p_data contours."""
    _check_2d(mp)
    lim = extent(mp)
    fig, axes = _figure(1, 2, (8.4, 4.3))
    xx, yy, pts = _grid(lim, 120)
    logp = np.asarray(mp.data.log_prob(pts)).reshape(xx.shape)
    for ax, x, name, color in (
        (axes[0][0], data, "ground truth: z ~ p_data", "tab:blue"),
        (axes[0][1], generated, title, "tab:red"),
    ):
        ax.contour(
            xx,
            yy,
            logp,
            levels=np.max(logp) - np.array([8.0, 4.0, 1.0]),
            colors="gray",
            linewidths=0.6,
        )
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4, color=color)
        _square(ax, lim, f"{name} (n = {x.shape[0]})")
    return save_figure(fig, path)


def plot_loss_curve(
    losses: np.ndarray,
    floor: float,
    path: str | os.PathLike[str],
    *,
    eval_steps: Sequence[int] = (),
    fm_losses: Sequence[float] = (),
    relative: Sequence[float] = (),
) -> Path:
    """Draw the minibatch CFM loss with L* as the floor and L_FM + L* at evaluations.

    A second panel shows the relative FM loss on a log scale.
    """
    losses = np.asarray(losses, dtype=np.float64)
    fig, axes = _figure(1, 2, (10.0, 3.8))
    ax = axes[0][0]
    steps = np.arange(1, losses.size + 1)
    ax.plot(steps, losses, lw=0.4, alpha=0.3, color="tab:blue", label="minibatch CFM loss")
    # Mean over the trailing 20% of steps: a window that widens with the step, as suits log-x.
    cs = np.concatenate([[0.0], np.cumsum(losses)])
    lo = np.floor(0.8 * np.arange(losses.size)).astype(np.int64)
    hi = np.arange(1, losses.size + 1)
    smooth = (cs[hi] - cs[lo]) / (hi - lo)
    ax.plot(steps, smooth, lw=1.4, color="tab:blue", label="running mean (last 20% of steps)")
    if np.isfinite(floor):
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
    else:
        ax.set_title("L* is infinite for this schedule (β̇ → ∞ at t = 1)", fontsize=9)
        ax.set_yscale("log")  # heavy-tailed minibatch losses: show spikes and the mean alike
    ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax2 = axes[0][1]
    if len(eval_steps):
        ax2.loglog(eval_steps, relative, "o-", ms=3, color="tab:red")
    ax2.axhline(0.10, color="gray", ls=":", lw=1, label="0.10")
    ax2.set_xlabel("step")
    ax2.set_ylabel("relative FM loss  L_FM / E||u_t||²")
    ax2.legend(fontsize=7)
    fig.suptitle("Training: CFM loss approaches the irreducible floor L*", fontsize=10)
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
