"""benchmarks/gpu_check.py's checks, run on CPU namespaces (the GPU run needs CuPy and a device).

The check functions take (xp, device, dtype), so the code a GPU machine runs is exercised
here on NumPy and array_api_strict in both precisions, and shown able to fail.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402
from fmref import _gmm  # noqa: E402


def _namespaces() -> list[Any]:
    out = [pytest.param(np, "cpu", id="numpy")]
    try:
        import array_api_strict as xps

        out.append(pytest.param(xps, xps.Device("CPU_DEVICE"), id="strict"))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize(("xp", "device"), _namespaces())
@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_checks_pass_on_cpu_namespaces(xp: Any, device: Any, dtype_name: str) -> None:
    checks = gpu_check.run_checks(xp, device, [getattr(xp, dtype_name)])
    assert len(checks) > 40
    failed = [c for c in checks if not c.ok]
    assert failed == []
    assert {c.dtype for c in checks} == {dtype_name}


def test_checks_detect_wrong_quantities(monkeypatch: pytest.MonkeyPatch) -> None:
    """A velocity off by 1 % breaks the identities; a ∂_t log p off by 1 % breaks continuity."""
    real_u, real_dt = _gmm.vector_field, _gmm.dlog_prob_dt
    monkeypatch.setattr(_gmm, "vector_field", lambda *a, **k: 1.01 * real_u(*a, **k))
    ident = gpu_check.check_identities(np, "cpu", np.float64)
    assert not ident[0].ok  # u from the score identity no longer matches
    assert ident[1].ok and ident[2].ok  # the parameterisations not involving u still agree
    monkeypatch.setattr(_gmm, "vector_field", real_u)
    monkeypatch.setattr(_gmm, "dlog_prob_dt", lambda *a, **k: 1.01 * real_dt(*a, **k))
    cont = gpu_check.check_continuity(np, "cpu", np.float64)
    assert cont and not any(c.ok for c in cont)


def test_check_result_semantics() -> None:
    assert gpu_check.Check("a", "float64", 1e-12, 1e-10).ok
    assert not gpu_check.Check("a", "float64", 1e-9, 1e-10).ok
    assert not gpu_check.Check("a", "float64", float("nan"), 1e-10).ok
    assert gpu_check._rel(np.zeros(3), np.zeros(4)) == float("inf")  # a shape change fails


def test_bench_rows_on_numpy() -> None:
    rows = gpu_check.bench(
        np,
        "cpu",
        [np.float64],
        lambda: None,
        sizes=(300,),
        dims=(2, 3),
        k=4,
        gemm_size=32,
        repeat=1,
    )
    assert [(r["n"], r["d"], r["dtype"]) for r in rows] == [
        (300, 2, "float64"),
        (300, 3, "float64"),
    ]
    for r in rows:
        assert r["seconds"] > 0 and r["gemm_gflops_device"] > 0
        assert r["points_per_s"] == pytest.approx(r["n"] / r["seconds"], rel=1e-12, abs=0)
    assert "points/s" in gpu_check._table([], rows)


def test_missing_gpu_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    if not isinstance(gpu_check._cupy(), str):
        pytest.skip("a CUDA device is present: run benchmarks/gpu_check.py itself")
    assert gpu_check.main([]) == 2
    assert gpu_check.main(["--allow-missing"]) == 0
    assert "skipped" in capsys.readouterr().err
