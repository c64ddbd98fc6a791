"""The oracle for other implementations: assert helpers, golden vectors, hypothesis strategies.

``fmref.testing`` uses the core and is never imported by it. The hypothesis strategies live in
:mod:`fmref.testing.strategies`, imported on first use, so ``import fmref.testing`` does not need
hypothesis.

Default tolerances by the precision a test asks for (``precision=``, else the dtype of
``like=`` or of the converted inputs; never the dtype the implementation returns, and a
result of lower precision fails) (see :data:`TOLERANCES`):

========== ======= ======= ==============================================================
dtype       rtol    atol    why
========== ======= ======= ==============================================================
float64     1e-7    1e-9    an independent float64 implementation of the closed forms agrees
                            to ~1e-12 on well-conditioned mixtures; 1e-7 leaves room for
                            other algorithms (Cholesky instead of eigenvectors, autodiff
                            divergences) while still catching any formula error
float32     1e-4    1e-5    unit roundoff 6e-8 amplified by log-sum-exp, d-term sums and
                            the condition number of S_k = α²Σ_k + β²I (≤ ~100 here)
float16/    1e-2    1e-3    unit roundoff 5e-4 (float16) / 4e-3 (bfloat16)
bfloat16
========== ======= ======= ==============================================================

A check passes where |actual − expected| ≤ atol + rtol·|expected| + allowance elementwise
(NumPy's ``allclose`` rule plus 64·u·cond, u the unit roundoff of the asked precision and cond
a float64 estimate of how far rounding moves the exact answer; it matters only where the answer
is ill-conditioned, at tail points and near t = 1); the report gives the worst ratio. The
default test design (:mod:`fmref.testing.asserts`) reaches both ends of [0, 1] and tail points
far from every mode; :func:`oracle_mixture` is a test mixture with unequal weights and full
covariances.
Log-likelihoods from an ODE solve default to 100× these tolerances (the solver's error, not
rounding, dominates there).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ._cases import oracle_mixture
from ._compare import TOLERANCES, default_tolerance
from .asserts import (
    assert_cfg_close,
    assert_conditional_path_close,
    assert_log_likelihood_close,
    assert_quantity_close,
    assert_score_close,
    assert_vector_field_close,
)
from .likelihood_check import LIKELIHOOD_TOLERANCES, assert_flow_likelihood_close
from .sampler_check import assert_sampler_close, sampler_test_marginal
from .vectors import (
    SCHEMA_VERSION,
    Suite,
    VerifyReport,
    VerifyRow,
    load_suite,
    verify_suite,
    write_suite,
)

__all__ = [
    "LIKELIHOOD_TOLERANCES",
    "SCHEMA_VERSION",
    "TOLERANCES",
    "Suite",
    "VerifyReport",
    "VerifyRow",
    "assert_cfg_close",
    "assert_conditional_path_close",
    "assert_flow_likelihood_close",
    "assert_log_likelihood_close",
    "assert_quantity_close",
    "assert_sampler_close",
    "assert_score_close",
    "assert_vector_field_close",
    "default_tolerance",
    "load_suite",
    "oracle_mixture",
    "sampler_test_marginal",
    "strategies",
    "verify_suite",
    "write_suite",
]
if importlib.util.find_spec("hypothesis") is None:
    # ``from fmref.testing import *`` must work without hypothesis: the star import would
    # otherwise fetch ``strategies`` and fail. ``fmref.testing.strategies`` still says why.
    __all__.remove("strategies")


def __getattr__(name: str) -> Any:
    # Imported on first use so that fmref.testing works without hypothesis installed.
    if name == "strategies":
        return importlib.import_module(".strategies", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
