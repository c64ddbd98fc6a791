"""Langevin dynamics and the predictor–corrector sampler of fmref.sde with the exact score.

The yardstick is the exact log-density: under p_t, the mean of log p_t(X) is the negative
entropy, estimated here from independent exact draws; a chain that keeps p_t matches it
within standard errors, and a scaled (wrong) score does not.
"""

from __future__ import annotations

import numpy as np
import pytest

from fmref.marginals import MarginalPath
from fmref.mixtures import random_mixture
from fmref.schedules import Linear
from fmref.sde import langevin, predictor_corrector

MP = MarginalPath(random_mixture(3, 2, "full", rng=1), Linear())
N = 4000


def _gap(lp: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    se = np.hypot(lp.std(ddof=1) / np.sqrt(lp.size), ref.std(ddof=1) / np.sqrt(ref.size))
    return float(lp.mean() - ref.mean()), float(se)


@pytest.mark.parametrize(("scale", "keeps"), [(1.0, True), (0.8, False), (1.2, False)])
def test_langevin_at_fixed_t_keeps_p_t_only_with_the_exact_score(scale: float, keeps: bool) -> None:
    t = 0.7
    x0 = MP.sample(N, t, rng=1)
    ref = np.asarray(MP.log_prob(MP.sample(20_000, t, rng=2), t))
    # ε = 0.002 is 1 % of the smallest variance of p_t (0.19), so the O(ε) bias is negligible.
    res = langevin(lambda x, s: scale * MP.score(x, s), x0, t, step=0.002, steps=300, rng=3)
    gap, se = _gap(np.asarray(MP.log_prob(res.x, t)), ref)
    if keeps:
        assert abs(gap) < 3 * se, (gap, se)
    else:
        assert abs(gap) > 5 * se, (gap, se)
    assert res.nfe == 300 and res.method == "langevin"


def test_corrector_steps_remove_the_euler_predictor_bias() -> None:
    """20 Euler steps of the exact ODE miss E log p_data by many standard errors; three
    Langevin corrector steps per step bring the samples back within three."""
    x0 = np.random.default_rng(4).standard_normal((N, 2))
    ref = np.asarray(MP.data.log_prob(MP.data.sample(20_000, rng=5)))
    gaps = {}
    for k in (0, 3):
        res = predictor_corrector(
            MP.vector_field, MP.score, x0, rng=5, corrector_step=0.01, corrector_steps=k, steps=20
        )
        gaps[k] = _gap(np.asarray(MP.data.log_prob(res.x)), ref)
    assert abs(gaps[0][0]) > 4 * gaps[0][1], gaps
    assert abs(gaps[3][0]) < 3 * gaps[3][1], gaps


def test_bad_langevin_arguments() -> None:
    x0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"step .*must be a finite real number > 0"):
        langevin(MP.score, x0, 0.5, step=0.0, rng=0)
    with pytest.raises(TypeError, match="rng"):
        langevin(MP.score, x0, 0.5, step=0.1, rng="0")
    with pytest.raises(ValueError, match=r"\bt must be .*<= 1"):
        langevin(MP.score, x0, 1.5, step=0.1, rng=0)
    with pytest.raises(ValueError, match="corrector_steps"):
        predictor_corrector(
            MP.vector_field, MP.score, x0, rng=0, corrector_step=0.1, corrector_steps=-1
        )
    # rng is keyword-only.
    with pytest.raises(TypeError):
        langevin(MP.score, x0, 0.5, 0.1)  # type: ignore[misc]
