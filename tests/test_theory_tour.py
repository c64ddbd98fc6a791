"""examples/theory_tour.py: each residual it measures is within its stated tolerance.

The tour computes every number by a route independent of the closed form it checks (scipy
densities differenced in t and x, importance sampling, Monte-Carlo CFM targets, ODE solves);
here each number is held to the accuracy that route can reach.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# The module fixture runs the whole tour of docs/theory.md once (seconds).
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "theory_tour.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("theory_tour", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tour() -> dict[str, float]:
    return _example().main()


def test_returns_the_documented_residuals(tour: dict[str, float]) -> None:
    assert set(tour) == {
        "continuity_fd_rel",
        "continuity_fd_order",
        "continuity_fd_rel_wrong_field",
        "score_identity_rel",
        "divergence_fd_rel",
        "is_max_abs_z",
        "is_min_ess",
        "cfm_identity_z_exact",
        "cfm_identity_z_perturbed",
        "likelihood_max_abs_err",
        "gaussian_flow_max_abs_err",
    }
    assert all(np.isfinite(v) for v in tour.values())


def test_continuity_equation_holds_to_second_order(tour: dict[str, float]) -> None:
    # Central differences with h = 1e-3 on O(1) features: truncation error ~ h² ≈ 1e-6.
    np.testing.assert_allclose(tour["continuity_fd_rel"], 0.0, rtol=0, atol=1e-4)
    # Halving h divides the residual by 4: it is truncation error, not a modelling error.
    np.testing.assert_allclose(tour["continuity_fd_order"], 2.0, rtol=0, atol=0.2)
    # The same check rejects a wrong field (a conditional field) by an O(1) residual.
    assert tour["continuity_fd_rel_wrong_field"] > 0.1


def test_score_identity(tour: dict[str, float]) -> None:
    # Fourth-order differences of scipy's log p_t with h = 1e-3: error ~ 1e-11 relative.
    np.testing.assert_allclose(tour["score_identity_rel"], 0.0, rtol=0, atol=1e-8)


def test_divergence_against_finite_differences(tour: dict[str, float]) -> None:
    # Second-order central differences with h = 1e-4: truncation ~ h² ≈ 1e-8 relative.
    np.testing.assert_allclose(tour["divergence_fd_rel"], 0.0, rtol=0, atol=1e-6)


def test_vector_field_is_the_posterior_mean_of_conditional_fields(tour: dict[str, float]) -> None:
    # 18 z-scores (9 points × 2 coordinates); P(max |z| > 5) < 1e-5 if the field is exact.
    assert tour["is_max_abs_z"] < 5.0
    assert tour["is_min_ess"] > 500  # the IS reference itself is not degenerate


def test_cfm_equals_fm_plus_floor(tour: dict[str, float]) -> None:
    # Common random numbers: per-sample differences have mean 0; |z| < 4 both times.
    np.testing.assert_allclose(tour["cfm_identity_z_exact"], 0.0, rtol=0, atol=4.0)
    np.testing.assert_allclose(tour["cfm_identity_z_perturbed"], 0.0, rtol=0, atol=4.0)


def test_likelihood_reproduces_log_p_data(tour: dict[str, float]) -> None:
    # DOP853 at rtol = atol = 1e-10 on the augmented ODE (x, ∫ div u): ~1e-10 nats.
    np.testing.assert_allclose(tour["likelihood_max_abs_err"], 0.0, rtol=0, atol=1e-8)


def test_gaussian_flow_matches_an_ode_solve(tour: dict[str, float]) -> None:
    # DOP853 at rtol = atol = 1e-11 from t = 0 to 1 on O(1) states.
    np.testing.assert_allclose(tour["gaussian_flow_max_abs_err"], 0.0, rtol=0, atol=1e-9)
