"""Shared fixtures: array namespaces to run every check on, and the hypothesis CI profile."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass(frozen=True)
class Backend:
    """An array namespace with a device and a float dtype, plus NumPy round-tripping."""

    name: str
    xp: Any
    device: Any
    dtype: Any

    def asarray(self, a: Any) -> Any:
        a = np.asarray(a, dtype=np.float64)
        if self.name == "numpy":
            return a.astype(self.dtype)
        if self.name == "torch":
            import torch

            return torch.asarray(a, dtype=self.dtype, device=self.device)
        return self.xp.asarray(a, dtype=self.dtype, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        from fmref._xp import to_numpy

        return np.asarray(to_numpy(a), dtype=np.float64)


def _backends() -> list[Any]:
    out = [pytest.param(("numpy", "float64"), id="numpy-f64")]
    out.append(pytest.param(("array_api_strict", "float64"), id="strict-f64"))
    out.append(pytest.param(("torch", "float64"), id="torch-f64"))
    out.append(pytest.param(("cupy", "float64"), id="cupy-f64"))
    return out


def make_backend(name: str, dtype: str) -> Backend:
    if name == "numpy":
        return Backend("numpy", np, "cpu", getattr(np, dtype))
    if name == "array_api_strict":
        xps = pytest.importorskip("array_api_strict", reason="array_api_strict not installed")
        return Backend(name, xps, xps.Device("CPU_DEVICE"), getattr(xps, dtype))
    if name == "torch":
        torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
        from array_api_compat import torch as xpt

        return Backend(name, xpt, torch.device("cpu"), getattr(torch, dtype))
    if name == "cupy":
        cp = pytest.importorskip("cupy", reason="cupy not installed (needs a GPU)")
        try:
            if cp.cuda.runtime.getDeviceCount() < 1:
                pytest.skip("no CUDA device")
        except Exception as exc:  # cupy raises its own runtime errors without a driver
            pytest.skip(f"no usable CUDA device: {exc}")
        from array_api_compat import cupy as xpc

        return Backend(name, xpc, cp.cuda.Device(0), getattr(cp, dtype))
    raise ValueError(name)


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    """(namespace, device, dtype) over numpy, array_api_strict, torch CPU and cupy, float64."""
    return make_backend(*request.param)


@pytest.fixture(
    params=[
        pytest.param(("numpy", "float32"), id="numpy-f32"),
        pytest.param(("array_api_strict", "float32"), id="strict-f32"),
    ]
)
def backend32(request: pytest.FixtureRequest) -> Backend:
    """float32 backends, checked with looser tolerances."""
    return make_backend(*request.param)
