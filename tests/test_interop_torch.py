"""Worked examples with PyTorch: an independent torch implementation checked against a golden
suite and with assert_vector_field_close, and a small trained torch field checked loosely."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")

import fmref  # noqa: E402
from fmref.testing import (  # noqa: E402
    assert_score_close,
    assert_vector_field_close,
    verify_suite,
    write_suite,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_exact_field.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("torch_exact_field", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
        z = data.sample(256, rng)
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
