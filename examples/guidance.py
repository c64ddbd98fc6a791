"""Classifier-free guidance measured exactly: what the CFG ODE does to p_data(· | y).

For each guidance weight w (u^w = (1 − w) u + w u_y; w = 1 is the conditional field) it
samples the CFG ODE from p_init, computes the exact log-density of the samples through the
likelihood ODE with the exact divergence, and compares the output with the tilted density
q^w_1 ∝ p_data^{1−w} p_data(· | y)^w (normalised by quadrature) and with p_data(· | y):

- KL(CFG output ‖ q^w_1), with its standard error: 0 at w = 1, positive for w > 1;
- the mode weights of the CFG samples against π_{k|y} (hard assignment by responsibility);
- the shape of each mode, in units of its standard deviation σ: the mean radial offset
  (x − μ_k)·μ_k/|μ_k| / σ (0 under p_data(· | y); > 0: pushed away from the other class),
  and the radial and tangential variances / σ² (1 under p_data(· | y); the tangential one
  collapses, the radial one grows) and the fraction of samples outside the support
  (log p_data(x | y) below its 0.1 % quantile).

Run it with ``python examples/guidance.py [figure.png]`` (default ``guidance.png``).
Data: eight Gaussians on a circle in two alternating classes with weights 4:3:2:1 within
each class (``eight_gaussians_classes(2)``), Linear schedule, class y = 0.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from fmref.guidance import Tilted, cfg_gap
from fmref.marginals import MarginalPath
from fmref.mixtures import eight_gaussians_classes
from fmref.schedules import Linear

WEIGHTS = (0.0, 1.0, 2.0, 4.0, 8.0)
Y = 0
N = 1000


def measure(
    n_classes: int = 2, weights: tuple[float, ...] = WEIGHTS, n: int = N, rng: int = 0
) -> list[dict[str, Any]]:
    """Measure each effect of CFG at each weight; returns one dict of numbers per weight."""
    data = eight_gaussians_classes(n_classes)
    mp = MarginalPath(data, Linear())
    cond = data.given(Y)
    ref = cond.sample(50_000, rng=rng + 1)
    threshold = float(np.quantile(cond.log_prob(ref), 0.001))
    rows = []
    for w in weights:
        gap = cfg_gap(mp, y=Y, w=w, n=n, rng=rng)
        comp = np.argmax(np.asarray(cond.responsibilities(gap.x)), axis=1)
        freq = np.bincount(comp, minlength=cond.n_components) / n
        mu = cond.means[comp]
        e_r = mu / np.linalg.norm(mu, axis=1, keepdims=True)
        e_t = np.stack([-e_r[:, 1], e_r[:, 0]], axis=1)
        sd = np.sqrt(cond.covs[comp])
        radial = ((gap.x - mu) * e_r).sum(axis=1) / sd
        tangential = ((gap.x - mu) * e_t).sum(axis=1) / sd
        rows.append(
            {
                "w": w,
                "kl": gap.kl,
                "kl_stderr": gap.kl_stderr,
                "log_z": gap.log_normaliser.value,
                "mode_freq": freq,
                "radial_offset": float(radial.mean()),
                "radial_offset_stderr": float(radial.std(ddof=1) / np.sqrt(n)),
                "radial_var": float(radial.var(ddof=1)),
                "tangential_var": float(tangential.var(ddof=1)),
                "outside": float((gap.log_p_data < threshold).mean()),
                "mean_log_p_data": float(gap.log_p_data.mean()),
                "x": gap.x,
                "max_abs_log_rho_minus_log_p_data": float(
                    np.abs(gap.log_rho - gap.log_p_data).max()
                ),
            }
        )
    return rows


def figure(rows: list[dict[str, Any]], path: str, n_classes: int = 2) -> None:
    """CFG samples (top), q^w_1 (middle) and p_data(· | y) (bottom) for each weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmref.plotting import save_figure

    data = eight_gaussians_classes(n_classes)
    mp = MarginalPath(data, Linear())
    lim, m = 7.5, 240
    g = np.linspace(-lim, lim, m)
    gx, gy = np.meshgrid(g, g)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    p_cond = np.exp(np.asarray(data.given(Y).log_prob(pts))).reshape(m, m)
    fig, axes = plt.subplots(3, len(rows), figsize=(3.0 * len(rows), 9.0), squeeze=False)
    for j, r in enumerate(rows):
        w = r["w"]
        ax = axes[0, j]
        ax.contour(gx, gy, p_cond, levels=4, colors="0.6", linewidths=0.6)
        ax.scatter(r["x"][:, 0], r["x"][:, 1], s=2, alpha=0.5, color="C0")
        ax.set_title(f"CFG samples, w = {w:g}\nKL to q^w_1 = {r['kl']:.3f}", fontsize=9)
        q = Tilted(mp, Y, w)
        lq = np.asarray(q.log_prob(pts, 1.0)).reshape(m, m)
        axes[1, j].imshow(np.exp(lq), origin="lower", extent=(-lim, lim, -lim, lim))
        axes[1, j].set_title(f"tilted q^w_1, w = {w:g}", fontsize=9)
        axes[2, j].imshow(p_cond, origin="lower", extent=(-lim, lim, -lim, lim))
        axes[2, j].set_title(f"p_data(x | y = {Y})", fontsize=9)
        for ax in axes[:, j]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "guidance.png"
    out = []
    for n_classes in (2, 4):
        rows = measure(n_classes)
        pi = eight_gaussians_classes(n_classes).given(Y).weights
        print(f"eight_gaussians_classes({n_classes}), y = {Y}, π_k|y = {np.round(pi, 3)}, n = {N}")
        print(
            "   w   KL(CFG‖q^w_1) ± se   log Z^w_1   mode freq.            "
            "radial offset ± se   var_r   var_t   outside"
        )
        for r in rows:
            print(
                f"{r['w']:4g}   {r['kl']:8.4f} ± {r['kl_stderr']:.4f}   {r['log_z']:9.4f}   "
                f"{np.array2string(r['mode_freq'], precision=3):20s}  "
                f"{r['radial_offset']:6.3f} ± {r['radial_offset_stderr']:.3f}   "
                f"{r['radial_var']:6.3f}  {r['tangential_var']:6.3f}   {r['outside']:.4f}"
            )
        w1 = next(r for r in rows if r["w"] == 1.0)
        print(
            "w = 1: max |log ρ − log p_data(x | y)| over the samples = "
            f"{w1['max_abs_log_rho_minus_log_p_data']:.2e} nats"
        )
        if n_classes == 2:
            figure(rows[1:], path, n_classes)
        out.extend({**r, "n_classes": n_classes} for r in rows)
    print(f"figure: {path}")
    return out


if __name__ == "__main__":
    main()
