"""The independent PyTorch implementation of the exact marginal path (moved into the package).

It now ships as :mod:`fmref.testing.torch_reference`, installed with fmref; this file keeps the
old path working: ``fmref verify SUITE --impl examples/torch_exact_field.py:impl`` and
``fmref verify SUITE --impl fmref.testing.torch_reference:impl`` run the same code.
"""

from fmref.testing.torch_reference import (  # noqa: F401  (re-exported)
    SCHEDULES,
    ExactPath,
    divergence,
    eight_gaussians_linear,
    impl,
)
