"""Worked examples with PyTorch: an independent torch implementation checked against a golden
suite and with assert_vector_field_close, and a small trained torch field checked loosely."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")

import fmref  # noqa: E402
from fmref.testing import (  # noqa: E402
    assert_score_close,
    assert_vector_field_close,
    torch_reference,
    verify_suite,
    write_suite,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_exact_field.py"


def _example() -> Any:
    return torch_reference


def test_the_torch_reference_shares_no_code_with_fmref() -> None:
    # Independence is what makes its agreement evidence: it may import nothing from fmref.
    tree = ast.parse(Path(torch_reference.__file__).read_text(encoding="utf-8"))
    imported = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [n])
    ]
    assert imported and not [m for m in imported if m is None or m.startswith("fmref")], imported


@pytest.mark.slow
def test_the_torch_reference_imports_torch_lazily() -> None:
    code = "import sys, fmref.testing.torch_reference; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"


def test_the_example_file_runs_the_packaged_reference() -> None:
    spec = importlib.util.spec_from_file_location("torch_exact_field", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.impl is torch_reference.impl and mod.ExactPath is torch_reference.ExactPath


@pytest.mark.slow
def test_eight_gaussians_linear_is_the_exact_field_with_its_divergence() -> None:
    mp = fmref.MarginalPath(fmref.eight_gaussians(), fmref.Linear())
    like = torch.zeros(1, dtype=torch.float64)
    f = torch_reference.eight_gaussians_linear
    assert_vector_field_close(f, mp, like=like)
    x = mp.sample(64, 0.4, rng=1)
    t = np.full(64, 0.4)
    div = f.divergence(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(div, mp.divergence(x, t), rtol=1e-9, atol=1e-10)
    # The same field is caught on another data set of the same shape.
    with pytest.raises(AssertionError, match="worst point"):
        other = fmref.MarginalPath(fmref.eight_gaussians(radius=4.0), fmref.Linear())
        assert_vector_field_close(f, other, like=like)


@pytest.mark.slow
def test_independent_torch_implementation_passes_the_whole_suite(tmp_path: Path) -> None:
    write_suite(tmp_path / "suite", seed=0, per_time=2)
    report = verify_suite(tmp_path / "suite", _example().impl)
    assert report.passed and report.count("pass") == 24 * 7, report.table()


def test_torch_exact_field_with_assert_helpers() -> None:
    ex = _example()
    data = fmref.GaussianMixture(
        [0.4, 0.6], [[-1.0, 2.0], [1.5, -0.5]], [[[1.0, 0.3], [0.3, 0.6]], [[0.5, 0.0], [0.0, 2.0]]]
    )
    mp = fmref.MarginalPath(data, fmref.VP())
    path = ex.ExactPath("vp", {"b": 0.1, "B": 20.0}, data.weights, data.means, data.covs)
    like = torch.zeros(1, dtype=torch.float64)
    assert_vector_field_close(lambda x, t: path.vector_field(x, t).detach(), mp, like=like)

    def score(x: Any, t: Any) -> Any:
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(path.log_prob(x, t).sum(), x)[0]

    assert_score_close(score, mp, like=like)
    # The same torch field on another schedule is caught.
    with pytest.raises(AssertionError, match="worst point"):
        other = fmref.MarginalPath(data, fmref.Cosine())
        assert_vector_field_close(lambda x, t: path.vector_field(x, t).detach(), other, like=like)


def _mlp(g: Any, sizes: tuple[int, ...]) -> list[Any]:
    params = []
    for i, o in itertools.pairwise(sizes):
        w = torch.randn(i, o, generator=g, dtype=torch.float64) / np.sqrt(i)
        params += [w.requires_grad_(), torch.zeros(o, dtype=torch.float64, requires_grad=True)]
    return params


def _forward(params: list[Any], x: Any, t: Any) -> Any:
    h = torch.cat([x, t[:, None]], dim=1)
    for j in range(0, len(params) - 2, 2):
        h = torch.nn.functional.silu(h @ params[j] + params[j + 1])
    return h @ params[-2] + params[-1]


@pytest.fixture
def one_thread() -> Any:
    # Tiny matrices: one intra-op thread is fastest, and robust on a shared 2-core machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.slow
def test_a_briefly_trained_torch_field_is_close_and_an_untrained_one_is_not(one_thread) -> None:
    # The user's side: CFM training (Algorithm 3) of a small torch MLP for 600 Adam steps.
    data = fmref.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 1.0]], [0.3, 0.5])
    path = fmref.GaussianPath(fmref.Linear())
    g = torch.Generator().manual_seed(0)
    untrained = [p.detach().clone() for p in _mlp(g, (3, 48, 48, 2))]
    params = [p.clone().requires_grad_(True) for p in untrained]
    opt = torch.optim.Adam(params, lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(600):
        z = data.sample(256, rng=rng)
        eps, t = rng.standard_normal(z.shape), rng.random(256)
        x, target = path.sample(z, t, eps), path.target(z, eps, t)
        pred = _forward(params, torch.from_numpy(x), torch.from_numpy(t))
        loss = ((pred - torch.from_numpy(target)) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    # The check: 90% of points within 0.6 + 10% of |u_t| (measured: trained 90th-percentile
    # error ≈ 0.5, untrained median ≈ 1.9).
    mp = fmref.MarginalPath(data, fmref.Linear())
    check = dict(
        like=torch.zeros(1, dtype=torch.float64),
        times=[0.1, 0.3, 0.5, 0.7, 0.9],
        n=100,
        rtol=0.1,
        atol=0.6,
        quantile=0.9,
    )
    with torch.no_grad():
        assert_vector_field_close(lambda x, t: _forward(params, x, t), mp, **check)
        with pytest.raises(AssertionError, match=r"0\.9-quantile"):
            assert_vector_field_close(lambda x, t: _forward(untrained, x, t), mp, **check)


def test_the_readme_example_in_docs_runs_and_catches_a_sign_slip() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "oracle.md").read_text(encoding="utf-8")
    block = doc.split("<!-- readme-example -->")[1].split("<!-- /readme-example -->")[0]
    code = block.strip().removeprefix("```python").removesuffix("```")
    assert len([ln for ln in code.strip().splitlines() if ln.strip()]) <= 12
    ns: dict[str, Any] = {}
    exec(compile(code, "oracle.md", "exec"), ns)
    ns["test_my_field_is_exact"]()
    slipped: dict[str, Any] = {}
    exec(
        compile(code.replace("(t * S - (1 - t))", "(t * S + (1 - t))"), "oracle.md", "exec"),
        slipped,
    )
    with pytest.raises(AssertionError, match="640 of 720 points"):
        slipped["test_my_field_is_exact"]()
