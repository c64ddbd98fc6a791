"""Figures: each one is written (a PNG, atomically); the numbers behind them are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fmref import Linear, MarginalPath, eight_gaussians, plotting
from fmref.losses import cfm_floor, fm_loss

MP = MarginalPath(eight_gaussians(), Linear())
PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(p: Path) -> bool:
    return p.read_bytes()[:8] == PNG


def test_support_mask_drops_points_where_p_t_is_negligible() -> None:
    pts = np.array([[0.0, 0.0], [6.0, 6.0], [5.0, 0.0], [3.0, 0.0]])
    # t = 0: p_0 = N(0, I); p(6, 6)/p(0, 0) = e^-36 and p(3, 0)/p(0, 0) = e^-4.5 ≈ 0.011.
    np.testing.assert_array_equal(plotting.support(MP, pts, 0.0), [True, False, False, True])
    # t = 1: the data's modes; (5, 0) is a mode centre, the origin lies between the modes.
    keep = plotting.support(MP, pts, 1.0)
    assert keep[2] and not keep[0]


def test_density_norm_is_shared_across_times() -> None:
    lim = plotting.extent(MP)
    dens = plotting._densities(MP, (0.0, 1.0), lim, m=40)
    norm = plotting._density_norm(dens)
    top = max(float(d.max()) for d in dens)
    assert norm.vmax == pytest.approx(top, rel=1e-12)
    assert norm.vmin == pytest.approx(top * plotting.SUPPORT, rel=1e-12)


def test_every_figure_is_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = MP.data.sample(300, rng=rng)
    out = [
        plotting.plot_conditional_path(MP, z[0], tmp_path / "a.png"),
        plotting.plot_marginal_path(MP, tmp_path / "b.png", times=(0.0, 1.0)),
        plotting.plot_vector_fields(
            MP,
            lambda x, t: 0.9 * MP.vector_field(x, t),
            tmp_path / "c.png",
            times=(0.0, 0.9),
            name="0.9 u",
        ),
        plotting.plot_samples(MP, z, z + 0.1, tmp_path / "d.png", title="shifted"),
        plotting.plot_loss_curve(
            10.0 + rng.random(200),
            9.8,
            tmp_path / "e.png",
            eval_steps=[50, 200],
            fm_losses=[0.5, 0.1],
            relative=[0.05, 0.01],
        ),
        plotting.plot_loss_curve(10.0 + rng.random(50), float("inf"), tmp_path / "f.png"),
        plotting.plot_loss_profile(
            fm_loss(lambda x, t: 0.9 * MP.vector_field(x, t), MP, n=256),
            cfm_floor(MP, n=256),
            tmp_path / "g.png",
        ),
        plotting.plot_coverage(
            np.full(8, 0.125), np.full(8, 0.125), np.full(8, 0.01), tmp_path / "h.png"
        ),
    ]
    assert all(_is_png(p) for p in out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c}.png" for c in "abcdefgh"]


def test_plots_refuse_other_dimensions(tmp_path: Path) -> None:
    from fmref import GaussianMixture

    mp3 = MarginalPath(GaussianMixture.gaussian(np.zeros(3), np.ones(3)), Linear())
    with pytest.raises(ValueError, match="2-D"):
        plotting.plot_marginal_path(mp3, tmp_path / "x.png")


def test_long_model_names_are_shortened_from_the_front() -> None:
    """A long ``module:function`` name keeps its informative end and fits a title."""
    from fmref.plotting import _label

    long = "some.deeply.nested.package.module:eight_gaussians_linear"
    assert _label(long).endswith("eight_gaussians_linear") and len(_label(long)) == 32
    assert _label("MLP") == "MLP"
