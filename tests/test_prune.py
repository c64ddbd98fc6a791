"""Row-by-row pruning of mixture components (fmref._prune) against the unpruned kernel.

The pruned kernel must agree with ``MarginalPath(..., prune=False)`` to 1e-12 relative on
every quantity (the dropped terms are bounded by ε² of each quantity's scale; what remains is
the rounding of two routes), prune where the issue says it can (exact samples for t ≥ 0.5 on
separated mixtures, Dirac data near t = 1), and leave everything to the dense kernel where
nothing can go (near t = 0, overlapping components). The bound itself is checked against the
exact joint densities and component sizes, including tail points and float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import make_backend

from fmref import Cosine, GaussianMixture, Linear, MarginalPath, _gmm, _prune
from fmref.marginals import QUANTITIES, QUANTITIES_BEFORE_ONE
from fmref.mixtures import random_mixture

ALL = QUANTITIES + QUANTITIES_BEFORE_ONE
RTOL = 1e-12  # pruned vs unpruned, relative to each quantity's scale (float64)


def separated(k: int = 32, d: int = 24, kind: str = "full", seed: int = 0) -> GaussianMixture:
    return random_mixture(k, d, kind, rng=seed, mean_scale=6.0, var_range=(0.5, 2.0))


class Spy:
    """Records what each _prune.compute call returned (None: the chunk went dense)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list[Any] = []
        real = _prune.compute

        def spy(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            if kwargs.get("probe", True):
                self.results.append(out)
            return out

        monkeypatch.setattr(_prune, "compute", spy)

    def kept_share(self, n: int, k: int) -> float:
        """Kept (row, component) pairs over n·k; dense rows count k, unplanned chunks n·k."""
        planned = [r for r in self.results if r is not None]
        if not planned:
            return 1.0
        pairs = sum(int(np.sum(np.asarray(tm.slots.valid))) for r in planned for _, tm in r.pieces)
        pairs += sum(k * r.dense.size for r in planned)
        rows = sum(sum(rows.size for rows, _ in r.pieces) + r.dense.size for r in planned)
        return (pairs + k * (n - rows)) / (n * k)


def assert_matches(got: dict[str, Any], want: dict[str, Any], rtol: float = RTOL) -> None:
    """|got − want| ≤ rtol·(|want| + typical |want| of that quantity), entry by entry.

    The typical size (the median over rows of each row's largest entry) stands in for the
    scale of a quantity whose value crosses zero (a divergence, a score at a mode), where a
    plain relative error measures the rounding of either route, not the pruning.
    """
    for q, w in want.items():
        g, w = np.asarray(got[q], dtype=np.float64), np.asarray(w, dtype=np.float64)
        rows = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        scale = 1.0 if q == "responsibilities" else float(np.median(rows))
        bad = np.abs(g - w) > rtol * (np.abs(w) + scale)
        assert not bad.any(), (
            f"{q}: {int(bad.sum())} entries differ; worst |Δ| = {np.max(np.abs(g - w)):.3g} "
            f"at scale {scale:.3g}"
        )


def both(data: GaussianMixture, x: Any, t: Any, quantities=ALL, schedule=None):
    s = schedule or Linear()
    got = MarginalPath(data, s).evaluate(x, t, quantities)
    want = MarginalPath(data, s, prune=False).evaluate(x, t, quantities)
    return got, want


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic"])
@pytest.mark.parametrize("t", [0.5, 0.7, 0.9, 0.99])
def test_pruned_equals_unpruned_at_exact_samples(
    kind: str, t: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = separated(kind=kind)
    spy = Spy(monkeypatch)
    x = MarginalPath(data, Linear()).sample(1500, t, rng=1)  # > 4 PROBE: the probe path too
    got, want = both(data, x, t)
    assert_matches(got, want)
    # the premise: at exact samples for t ≥ 0.5 few components per row remain
    assert spy.kept_share(1500, 32) < (0.3 if t == 0.5 else 0.15), spy.kept_share(1500, 32)


@pytest.mark.parametrize("kind", ["full", "isotropic"])
def test_pruned_equals_unpruned_with_a_time_per_row(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = separated(kind=kind, seed=3)
    g = np.random.default_rng(4)
    t = g.uniform(0.4, 1.0, 1200)
    spy = Spy(monkeypatch)
    x = MarginalPath(data, Cosine()).sample(1200, t, rng=g)
    got, want = both(data, x, t, schedule=Cosine())
    assert_matches(got, want)
    assert spy.kept_share(1200, 32) < 0.3


@pytest.mark.parametrize("t", [0.0, 0.01, 0.1])
def test_nothing_to_prune_near_t0_goes_dense(t: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Near t = 0 every component overlaps N(0, I): no plan, the dense kernel's result."""
    data = separated()
    spy = Spy(monkeypatch)
    x = MarginalPath(data, Linear()).sample(1500, t, rng=2)
    got, want = both(data, x, t)
    assert spy.results and all(r is None for r in spy.results)
    assert_matches(got, want)


def test_overlapping_components_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_mixture(32, 16, "full", rng=5, mean_scale=0.3)
    spy = Spy(monkeypatch)
    x = MarginalPath(data, Linear()).sample(1500, 0.7, rng=6)
    got, want = both(data, x, 0.7)
    assert_matches(got, want)
    assert spy.kept_share(1500, 32) > 0.5


COVARIANCE = ("posterior_cov_trace", "cfm_floor_integrand")


@pytest.mark.parametrize("t", [0.9, 0.99, 0.999])
def test_dirac_data_near_one(t: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empirical data: v = β² → 0, so all but the nearest point drop out near t = 1.

    (d = 16: below about 20 000 operations of dense work per row nothing is planned.)
    """
    z = np.random.default_rng(7).standard_normal((64, 16)) * 2
    data = GaussianMixture.empirical(z)
    spy = Spy(monkeypatch)
    x = MarginalPath(data, Linear()).sample(1500, t, rng=8)
    got, want = both(data, x, t, tuple(q for q in ALL if q not in COVARIANCE))
    assert_matches(got, want)
    assert spy.kept_share(1500, 64) < 0.05


def test_dirac_posterior_covariance_is_never_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    """For Dirac data tr Cov(z|x) is all between-component part, of the size of the
    second-largest γ_k (1e-51 here, at t = 0.7): dropping even γ_k = 1e-70 would be a relative error
    of 1, so with the covariance quantities nothing is pruned (bit-identical results)."""
    z = np.random.default_rng(7).standard_normal((64, 16)) * 2
    data = GaussianMixture.empirical(z)
    x = MarginalPath(data, Linear()).sample(1500, 0.7, rng=8)
    got, want = both(data, x, 0.7, COVARIANCE)
    for q in COVARIANCE:
        np.testing.assert_array_equal(got[q], want[q])
    assert np.median(want["posterior_cov_trace"]) < 1e-40  # the premise: tiny but exact
    # and without that rule the comparison fails (the rule is needed, not decorative)
    monkeypatch.setattr(_prune, "compute", _without_covariance_rule(_prune.compute))
    wrong = MarginalPath(data, Linear()).evaluate(x, 0.7, COVARIANCE)
    with pytest.raises(AssertionError, match="entries differ"):
        assert_matches(wrong, want)


def _without_covariance_rule(real: Any) -> Any:
    def compute(*args: Any, covariance: bool = False, **kwargs: Any) -> Any:
        return real(*args, **kwargs)

    return compute


def test_tail_points_and_large_means(monkeypatch: pytest.MonkeyPatch) -> None:
    """Far from every mode (and with means of 1e4) the bound loosens, never breaks."""
    data = random_mixture(16, 8, "full", rng=9, mean_scale=1e4)
    g = np.random.default_rng(10)
    x = MarginalPath(data, Linear()).sample(1100, 0.8, rng=g)
    x[::3] += g.standard_normal((len(x[::3]), 8)) * 1e3
    got, want = both(data, x, 0.8)
    assert_matches(got, want)


def test_float32_matches_unpruned() -> None:
    data = separated(seed=11)
    x = MarginalPath(data, Linear()).sample(1500, 0.7, rng=12).astype(np.float32)
    got, want = both(data, x, 0.7, ("log_prob", "score", "vector_field", "divergence"))
    assert all(v.dtype == np.float32 for v in got.values())
    assert_matches(got, want, rtol=1e-5)


def test_wrong_pruning_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: keep only each row's best component, at t = 0.2."""
    data = separated(seed=13)
    x = MarginalPath(data, Linear()).sample(1500, 0.2, rng=14)
    want = MarginalPath(data, Linear(), prune=False).evaluate(x, 0.2, ALL)
    monkeypatch.setattr(_prune, "log_delta", lambda eps: 50.0)  # a far too loose threshold
    got = MarginalPath(data, Linear()).evaluate(x, 0.2, ALL)
    with pytest.raises(AssertionError, match="entries differ"):
        assert_matches(got, want)


@pytest.mark.parametrize("kind", ["full", "diagonal", "isotropic", "dirac"])
@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 0.95, 1.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bound_holds(kind: str, t: float, dtype: Any) -> None:
    """Upper bound ≥ exact joint log π_k N_k, and M_k ≥ |w_k|, |u_k|, |e_k|, |tr A_k|.

    Exact terms from the dense kernel in float64; points at p_t, 30σ tails and a far shift.
    """
    if kind == "dirac" and t == 1.0:
        pytest.skip("Dirac data has no density at t = 1")
    data = random_mixture(12, 16, kind, rng=15, mean_scale=3.0, var_range=(0.3, 3.0))
    g = np.random.default_rng(16)
    mp = MarginalPath(data, Cosine())
    x = mp.sample(300, t, rng=g)
    x[100:200] += g.standard_normal((100, 16)) * 30
    x[200:] += 1e3
    sv = Cosine()(np.array([t]))
    p64 = data.params(np, "cpu", np.float64)
    tm = _gmm.compute(p64, x, sv.alpha, sv.beta, np)
    joint = _gmm.log_joint(tm)
    ad, bbd = sv.alpha_dot.reshape(-1, 1, 1), sv.beta_beta_dot.reshape(-1, 1, 1)
    c = tm.half_sdot(ad, bbd)
    sizes = [
        np.linalg.norm(tm.w, axis=2),
        np.linalg.norm(ad * tm.mu_rot + c * tm.w, axis=2),
        np.linalg.norm(tm.mu_rot + tm.a * tm.lam * tm.w, axis=2),
        np.broadcast_to(np.abs(np.sum(c / tm.v, axis=2)), joint.shape),
    ]
    p = data.params(np, "cpu", dtype)
    xs = x.astype(dtype)
    svd = Cosine()(np.array([t], dtype=dtype))
    hi, log_size = _prune.bounds(p, xs, svd, np)
    # float32 inputs are rounded copies of x: their exact joint differs from x's by about
    # ε32·|x − αμ|²/v, so the check allows that much (float64: only the bound's own rounding)
    eps = np.finfo(dtype).eps
    x_err = 1e-9 + 8 * eps * (np.abs(joint) + np.linalg.norm(x, axis=1)[:, None] ** 2)
    ok = np.isfinite(joint)
    assert np.all(hi[ok] >= joint[ok] - x_err[ok]), np.max((joint - hi)[ok])
    for s in sizes:
        assert np.all(np.exp(log_size.astype(np.float64)) * (1 + 1e-5) >= s)


def test_wrong_bound_is_caught() -> None:
    """The soundness check can fail: a bound using the mean eigenvalue is below the joint."""
    data = random_mixture(12, 16, "full", rng=15, mean_scale=3.0, var_range=(0.3, 3.0))
    x = MarginalPath(data, Linear()).sample(300, 0.7, rng=17)
    sv = Linear()(np.array([0.7]))
    p = data.params(np, "cpu", np.float64)
    tm = _gmm.compute(p, x, sv.alpha, sv.beta, np)
    v_mean = np.mean(tm.v, axis=2)
    r2 = np.sum((x[:, None, :] - 0.7 * data.means[None]) ** 2, axis=2)
    wrong = np.log(data.weights) - 0.5 * (r2 / v_mean + np.sum(np.log(tm.v), axis=2))
    wrong -= 0.5 * 16 * np.log(2 * np.pi)
    assert np.any(wrong < _gmm.log_joint(tm) - 1e-6)


@pytest.mark.parametrize("name", ["array_api_strict", "torch"])
def test_backends_prune_too(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """array_api_strict (no index assignment: the sort-and-take path) and torch."""
    b = make_backend(name, "float64")
    data = separated(seed=18)
    x = MarginalPath(data, Linear()).sample(1100, 0.7, rng=19)
    quantities = ("log_prob", "score", "vector_field", "divergence", "responsibilities")
    want = MarginalPath(data, Linear(), prune=False).evaluate(x, 0.7, quantities)
    spy = Spy(monkeypatch)
    out = MarginalPath(data, Linear()).evaluate(b.asarray(x), 0.7, quantities)
    assert spy.kept_share(1100, 32) < 0.15
    assert_matches({q: b.to_numpy(v) for q, v in out.items()}, want)


def test_torch_autograd_through_pruned_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    data = separated(seed=20)
    mp = MarginalPath(data, Linear())
    x = torch.as_tensor(mp.sample(1100, 0.7, rng=21)).requires_grad_(True)
    spy = Spy(monkeypatch)
    (grad,) = torch.autograd.grad(mp.log_prob(x, 0.7).sum(), x)
    assert spy.kept_share(1100, 32) < 0.15
    score = MarginalPath(data, Linear(), prune=False).score(x.detach().numpy(), 0.7)
    np.testing.assert_allclose(grad.numpy(), score, rtol=1e-10, atol=1e-10)


def test_labels_are_never_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given y the class's components must stay even where the others dominate."""
    from fmref.mixtures import eight_gaussians_classes

    data = eight_gaussians_classes(2)
    spy = Spy(monkeypatch)
    mp = MarginalPath(data, Linear())
    x = mp.sample(1500, 0.9, rng=22)
    got = mp.score(x, 0.9, y=1)
    assert spy.results == []
    np.testing.assert_array_equal(got, MarginalPath(data, Linear(), prune=False).score(x, 0.9, y=1))


def test_prune_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="prune must be True or False"):
        MarginalPath(separated(), Linear(), prune=1)  # type: ignore[arg-type]
