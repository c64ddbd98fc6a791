"""fmref.testing.strategies: the drawn objects respect their arguments and compose."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from fmref import MarginalPath
from fmref.continuity import check
from fmref.testing import strategies as fst


@given(
    mix=fst.gaussian_mixtures(
        dim=st.integers(1, 4), components=3, covariance="full", eigenvalues=(0.2, 3.0)
    )
)
def test_full_mixtures_respect_eigenvalue_range(mix) -> None:
    assert mix.kind == "full" and mix.n_components == 3 and 1 <= mix.dim <= 4
    lam = np.linalg.eigvalsh(mix.full_covs())
    assert lam.min() >= 0.2 * (1 - 1e-9) and lam.max() <= 3.0 * (1 + 1e-9)
    np.testing.assert_allclose(mix.weights.sum(), 1.0, rtol=0, atol=1e-12)
    assert mix.weights.min() >= 0.05 / 3 - 1e-12  # each ≥ min_weight before normalising
    assert np.abs(mix.means).max() <= 3.0


@given(kind=st.sampled_from(["isotropic", "diagonal", "dirac"]), data=st.data())
def test_each_kind_is_drawn_as_asked(kind, data) -> None:
    mix = data.draw(fst.gaussian_mixtures(dim=2, components=st.integers(1, 4), covariance=kind))
    assert mix.kind == kind and mix.dim == 2
    if kind != "dirac":
        assert mix.eigenvalues.min() >= 0.1 and mix.eigenvalues.max() <= 4.0


@given(s=fst.schedules(include_singular=False))
def test_schedules_interpolate_noise_to_data(s) -> None:
    v0, v1 = s(np.array([0.0])), s(np.array([1.0]))
    np.testing.assert_allclose([v0.alpha[0], v0.beta[0]], [0.0, 1.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose([v1.alpha[0], v1.beta[0]], [1.0, 0.0], rtol=0, atol=1e-12)
    assert not s.singular_at_one


def test_schedules_can_include_singular_ones() -> None:
    s = find(fst.schedules(), lambda s: s.singular_at_one)
    assert s.singular_at_one


@given(t=fst.times(include_endpoints=False, min_value=0.2, max_value=0.6))
def test_open_times_stay_inside(t) -> None:
    assert 0.2 < t < 0.6


def test_closed_times_reach_both_endpoints() -> None:
    assert find(fst.times(), lambda t: t == 1.0) == 1.0
    assert find(fst.times(), lambda t: t == 0.0) == 0.0


@given(
    mp=fst.marginal_paths(dim=2, covariance=st.sampled_from(["isotropic", "full"])),
    t=fst.times(include_endpoints=False),
    data=st.data(),
)
def test_points_compose_and_satisfy_the_continuity_equation(mp, t, data) -> None:
    x = data.draw(fst.points(mp, t, n=st.integers(1, 6)))
    assert x.ndim == 2 and x.shape[1] == 2 and 1 <= x.shape[0] <= 6
    # The fallible check (differences of log_prob and of u), not the closed-form identity.
    c = check(mp, x, t)
    assert c.ok, np.max(np.abs(c.residual) / c.error)


@given(
    mp=fst.marginal_paths(dim=1, components=1, covariance="isotropic", include_singular=False),
    data=st.data(),
)
def test_points_are_exact_samples_of_p_t(mp: MarginalPath, data) -> None:
    # One Gaussian N(α μ, α² s + β²) at t = 0.5: mean and variance within 6 standard errors.
    n, t = 4000, 0.5
    x = data.draw(fst.points(st.just(mp), st.just(t), n=n))[:, 0]
    sv = mp.schedule(np.array([t]))
    mean = sv.alpha[0] * mp.data.means[0, 0]
    var = sv.alpha[0] ** 2 * mp.data.covs[0] + sv.beta[0] ** 2
    assert abs(x.mean() - mean) < 6 * np.sqrt(var / n)
    assert abs(x.var() - var) < 6 * var * np.sqrt(2 / n)


@pytest.mark.slow
def test_import_fmref_testing_does_not_need_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import fmref.testing as ft\n"
        "assert callable(ft.assert_vector_field_close)\n"
        "try:\n    ft.strategies\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


@given(name=fst.schedule_names(include_singular=False, exclude=("cosine",)))
def test_schedule_names_respect_their_filters(name: str) -> None:
    assert name in fst.NAMED_SCHEDULES and name != "cosine"
    assert not fst.NAMED_SCHEDULES[name].singular_at_one


def test_schedule_names_reach_every_family_and_refuse_bad_filters() -> None:
    for name in fst.NAMED_SCHEDULES:
        assert find(fst.schedule_names(), lambda n, name=name: n == name) == name
    with pytest.raises(ValueError, match="exclude"):
        fst.schedule_names(exclude=("nope",))
    with pytest.raises(ValueError, match="no schedule"):
        fst.schedule_names(exclude=tuple(fst.NAMED_SCHEDULES))


def test_named_schedules_are_the_families_they_are_named_for() -> None:
    # Checked against the schedules' defining α_t at t = 1/2, not against fmref's table.
    t = np.array([0.5])
    expected = {
        "linear": 0.5,
        "cosine": np.sin(np.pi / 4),
        "poly2": 0.25,
        "poly3": 0.125,
        "sqrt_beta": 0.5,
    }
    for name, alpha in expected.items():
        got = fst.NAMED_SCHEDULES[name](t).alpha[0]
        np.testing.assert_allclose(got, alpha, rtol=1e-12, atol=0, err_msg=name)
    assert set(fst.NAMED_SCHEDULES) == set(expected) | {"linear_vp", "vp"}
