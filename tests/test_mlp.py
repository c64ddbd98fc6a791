"""MLP: forward against a NumPy reference, gradients/Jacobian/divergence against central
finite differences in float64, float32 against float64, checkpoints, initialisation, errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fmref.mlp import MLP

ACTS = ["silu", "tanh", "relu"]
FD_H = 1e-5  # central differences: truncation ~h² ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11
D, HIDDEN, F, N = 3, (6, 5), 2, 7

# Independent definitions of the documented architecture (silu through exp, not tanh).
ACT_FN = {
    "silu": lambda z: z / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
}


def reference_forward(state: dict, cfg: dict, x: np.ndarray, t: Any) -> tuple[np.ndarray, list]:
    """u = φ(x, t) W1 + b1 → act → ... → W_L + b_L; also return every pre-activation."""
    n = x.shape[0]
    t = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))[:, None]
    om = 2 * np.pi * np.arange(1, cfg["time_frequencies"] + 1)
    h = np.concatenate([x, t, np.sin(om * t), np.cos(om * t)], axis=1)
    n_layers = len(cfg["hidden"]) + 1
    pre = []
    for i in range(1, n_layers + 1):
        z = h @ state[f"W{i}"].astype(np.float64) + state[f"b{i}"].astype(np.float64)
        if i < n_layers:
            pre.append(z)
            h = ACT_FN[cfg["activation"]](z)
    return z, pre


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.standard_normal((N, D)), g.uniform(size=N), g.standard_normal((N, D))


def build(backend: Any, act: str, seed: int = 0, **kw: Any) -> MLP:
    kw = {"hidden": HIDDEN, "time_frequencies": F, "dtype": "float64", **kw}
    return MLP(D, activation=act, rng=seed, like=backend.asarray([0.0]), **kw)


def far_from_kinks(model: MLP, x: np.ndarray, t: np.ndarray, margin: float = 1e-3) -> None:
    """ReLU is not differentiable at 0: differences of size 1e-5 must not cross a kink."""
    if model.activation == "relu":
        _, pre = reference_forward(model.state_dict(), model.to_config(), x, t)
        assert min(float(np.abs(z).min()) for z in pre) > margin


@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_reference(backend: Any, act: str) -> None:
    x, t, _ = problem()
    model = build(backend, act, seed=3)
    ref, _ = reference_forward(model.state_dict(), model.to_config(), x, t)
    out = model(backend.asarray(x), backend.asarray(t))
    np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-12, atol=1e-14)
    # A scalar t equals the same t on every row.
    one = backend.to_numpy(model(backend.asarray(x), 0.375))
    np.testing.assert_allclose(
        one,
        backend.to_numpy(model(backend.asarray(x), backend.asarray(np.full(N, 0.375)))),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("act", ACTS)
def test_parameter_gradients_match_central_differences(backend: Any, act: str) -> None:
    x, t, target = problem(1)
    model = build(backend, act, seed=2)
    xb, tb, yb = backend.asarray(x), backend.asarray(t), backend.asarray(target)
    far_from_kinks(model, x, t)
    loss, grads = model.loss_and_grad(xb, tb, yb)
    base = model.state_dict()

    def loss_at(state: dict) -> float:
        model.load_state_dict(state)
        r = backend.to_numpy(model(xb, tb)) - target
        return float(np.mean(np.sum(r * r, axis=1)))

    assert loss == pytest.approx(loss_at(base), rel=1e-13, abs=0)
    assert [tuple(g.shape) for g in grads] == [v.shape for v in base.values()]
    for name, g in zip(model.param_names, grads, strict=True):
        fd = np.zeros(base[name].shape)
        for idx in np.ndindex(fd.shape):
            plus = {k: v.copy() for k, v in base.items()}
            minus = {k: v.copy() for k, v in base.items()}
            plus[name][idx] += FD_H
            minus[name][idx] -= FD_H
            fd[idx] = (loss_at(plus) - loss_at(minus)) / (2 * FD_H)
        assert np.abs(fd).max() > 1e-4, f"{name}: gradient vanishes, the check would be vacuous"
        np.testing.assert_allclose(backend.to_numpy(g), fd, rtol=1e-6, atol=1e-9, err_msg=name)


def fd_jacobian(model: MLP, backend: Any, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    tb = backend.asarray(t)
    jac = np.zeros((x.shape[0], D, D))
    for j in range(D):
        e = np.zeros(D)
        e[j] = FD_H
        up = backend.to_numpy(model(backend.asarray(x + e), tb))
        down = backend.to_numpy(model(backend.asarray(x - e), tb))
        jac[:, :, j] = (up - down) / (2 * FD_H)
    return jac


@pytest.mark.parametrize("act", ACTS)
def test_jacobian_and_divergence_match_central_differences(backend: Any, act: str) -> None:
    x, t, _ = problem(4)
    model = build(backend, act, seed=5)
    far_from_kinks(model, x, t)
    fd = fd_jacobian(model, backend, x, t)
    jac = backend.to_numpy(model.jacobian(backend.asarray(x), backend.asarray(t)))
    div = backend.to_numpy(model.divergence(backend.asarray(x), backend.asarray(t)))
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(div, np.trace(fd, axis1=1, axis2=2), rtol=1e-6, atol=1e-9)


def test_jacobian_is_chunk_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    x, t, _ = problem(6)
    model = MLP(D, (16, 16), rng=1)
    jac, div = model.jacobian(x, t), model.divergence(x, t)
    monkeypatch.setenv("FMREF_MEMORY_BUDGET", "512")  # a few rows per chunk
    np.testing.assert_allclose(model.jacobian(x, t), jac, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(model.divergence(x, t), div, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("act", ACTS)
def test_float32_matches_float64(backend32: Any, act: str) -> None:
    """Same seed, same weights up to rounding: float32 agrees to ~1e-6 relative, stays float32."""
    x, t, target = problem(7)
    m64 = MLP(D, (32, 32), activation=act, dtype="float64", rng=8)
    m32 = MLP(D, (32, 32), activation=act, dtype="float32", rng=8, like=backend32.asarray([0.0]))
    xb, tb, yb = (backend32.asarray(a) for a in (x, t, target))
    out = m32(xb, tb)
    assert out.dtype == backend32.dtype
    np.testing.assert_allclose(backend32.to_numpy(out), m64(x, t), rtol=1e-4, atol=1e-6)
    loss32, g32 = m32.loss_and_grad(xb, tb, yb)
    loss64, g64 = m64.loss_and_grad(x, t, target)
    assert loss32 == pytest.approx(loss64, rel=1e-5, abs=0)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == backend32.dtype
        np.testing.assert_allclose(backend32.to_numpy(a), b, rtol=1e-3, atol=1e-5 * np.abs(b).max())
    for fn in ("jacobian", "divergence"):
        got = getattr(m32, fn)(xb, tb)
        assert got.dtype == backend32.dtype
        want = getattr(m64, fn)(x, t)
        np.testing.assert_allclose(backend32.to_numpy(got), want, rtol=1e-3, atol=1e-5)


def test_torch_autograd_agrees() -> None:
    """An independent implementation: torch autograd on the same weights (float64)."""
    torch = pytest.importorskip("torch")
    x, t, target = problem(9)
    model = MLP(D, HIDDEN, time_frequencies=F, rng=10)
    st_ = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}

    def u(xt: Any) -> Any:
        tt = torch.tensor(t)[:, None]
        om = 2 * torch.pi * torch.arange(1, F + 1, dtype=torch.float64)
        h = torch.cat([xt, tt, torch.sin(om * tt), torch.cos(om * tt)], dim=1)
        for i in range(1, len(HIDDEN) + 2):
            h = h @ st_[f"W{i}"] + st_[f"b{i}"]
            h = torch.nn.functional.silu(h) if i <= len(HIDDEN) else h
        return h

    loss = ((u(torch.tensor(x)) - torch.tensor(target)) ** 2).sum(1).mean()
    loss.backward()
    ours, grads = model.loss_and_grad(x, t, target)
    assert ours == pytest.approx(float(loss.detach()), rel=1e-13, abs=0)
    for name, g in zip(model.param_names, grads, strict=True):
        np.testing.assert_allclose(g, st_[name].grad.numpy(), rtol=1e-11, atol=1e-14)
    jac = torch.autograd.functional.jacobian(lambda v: u(v).sum(0), torch.tensor(x))
    np.testing.assert_allclose(
        model.jacobian(x, t), jac.permute(1, 0, 2).detach().numpy(), rtol=1e-11, atol=1e-14
    )


@given(
    dim=st.integers(1, 4),
    hidden=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    freqs=st.integers(0, 3),
    act=st.sampled_from(ACTS),
    seed=st.integers(0, 2**16),
)
def test_divergence_is_trace_and_rows_are_independent(
    dim: int, hidden: list[int], freqs: int, act: str, seed: int
) -> None:
    g = np.random.default_rng(seed)
    x, t = g.standard_normal((5, dim)), g.uniform(size=5)
    model = MLP(dim, hidden, activation=act, time_frequencies=freqs, rng=seed)
    jac = model.jacobian(x, t)
    assert jac.shape == (5, dim, dim)
    np.testing.assert_allclose(
        model.divergence(x, t), np.trace(jac, axis1=1, axis2=2), rtol=1e-12, atol=1e-14
    )
    np.testing.assert_allclose(model(x[2:4], t[2:4]), model(x, t)[2:4], rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip(backend: Any, tmp_path: Any) -> None:
    x, t, _ = problem(11)
    a, b = build(backend, "silu", seed=0), build(backend, "silu", seed=1)
    xb, tb = backend.asarray(x), backend.asarray(t)
    assert not np.allclose(
        backend.to_numpy(a(xb, tb)), backend.to_numpy(b(xb, tb)), rtol=0, atol=1e-6
    )
    ids = [id(p) for p in b.params]
    state = a.state_dict()
    np.savez(tmp_path / "ck.npz", **state)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as f:
        b.load_state_dict(dict(f))
    assert [id(p) for p in b.params] == ids  # loaded in place: optimisers keep their references
    np.testing.assert_array_equal(backend.to_numpy(b(xb, tb)), backend.to_numpy(a(xb, tb)))
    cfg = json.loads(json.dumps(a.to_config()))
    c = MLP.from_config(cfg, state, like=backend.asarray([0.0]))
    np.testing.assert_array_equal(backend.to_numpy(c(xb, tb)), backend.to_numpy(a(xb, tb)))
    state["W1"][...] = 0.0  # the state dict is a copy
    assert float(np.abs(a.state_dict()["W1"]).max()) > 0
    d = MLP.from_config(cfg, rng=0, like=backend.asarray([0.0]))
    np.testing.assert_array_equal(backend.to_numpy(d(xb, tb)), backend.to_numpy(a(xb, tb)))


@pytest.mark.parametrize(
    ("act", "hidden_std"),
    [
        ("silu", lambda i, o: np.sqrt(2 / i)),
        ("relu", lambda i, o: np.sqrt(2 / i)),
        ("tanh", lambda i, o: np.sqrt(2 / (i + o))),
    ],
)
def test_initialisation_statistics(act: str, hidden_std: Any) -> None:
    """He (SiLU, ReLU) / Glorot (tanh) hidden layers, 0.1/√fan_in output, zero biases."""
    model = MLP(2, (300, 400), activation=act, time_frequencies=3, rng=0)
    sd = model.state_dict()
    # ~10⁵ draws per matrix: the sample std is within 1% with overwhelming probability.
    np.testing.assert_allclose(sd["W2"].std(), hidden_std(300, 400), rtol=0.01, atol=0)
    np.testing.assert_allclose(sd["W3"].std(), 0.1 / np.sqrt(400), rtol=0.05, atol=0)
    assert sd["W1"].shape == (2 + 1 + 2 * 3, 300)
    assert all(np.all(sd[f"b{i}"] == 0) for i in (1, 2, 3))
    assert model.n_params == sum(v.size for v in sd.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim"),
        ({"hidden": ()}, "hidden"),
        ({"hidden": (4, 0)}, r"hidden\[1\]"),
        ({"activation": "gelu"}, "activation"),
        ({"time_frequencies": -1}, "time_frequencies"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    args = {"dim": 2, "rng": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        MLP(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": True}, "dim"),
        ({"dim": 2.0}, "dim"),
        ({"hidden": 4}, "hidden"),
        ({"hidden": (4.5,)}, r"hidden\[0\]"),
        ({"activation": None}, "activation"),
    ],
)
def test_wrong_hyper_parameter_types(kwargs: dict, match: str) -> None:
    args = {"dim": 2, "rng": 0, **kwargs}
    with pytest.raises(TypeError, match=match):
        MLP(**args)


def test_bad_inputs() -> None:
    model = MLP(2, (4,), rng=0)
    x = np.zeros((3, 2))
    with pytest.raises(TypeError, match="rng"):
        MLP(2, (4,), rng="seed")
    with pytest.raises(ValueError, match="x must have shape"):
        model(np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="x must be finite"):
        model(np.full((3, 2), np.nan), 0.5)
    with pytest.raises(TypeError, match="x must have a real floating"):
        model(np.zeros((3, 2), dtype=np.int64), 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        model(x, 1.5)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        model(x, np.full(4, 0.5))
    with pytest.raises(ValueError, match="target must have shape"):
        model.loss_and_grad(x, 0.5, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="grad_out"):
        model.backward(model.forward(x, 0.5)[1], np.zeros((5, 2)))
    with pytest.raises(TypeError, match="cache"):
        model.backward(None, np.zeros((3, 2)))  # type: ignore[arg-type]
    empty = np.zeros((0, 2))
    deep = MLP(2, (4, 3), rng=0)
    assert deep.jacobian(empty, 0.5).shape == (0, 2, 2) and deep(empty, 0.5).shape == (0, 2)
    assert deep.divergence(empty, 0.5).shape == (0,)
    with pytest.raises(ValueError, match="at least one row"):
        model.loss_and_grad(empty, 0.5, empty)
    good = model.state_dict()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({k: v for k, v in good.items() if k != "b1"})
    with pytest.raises(ValueError, match="W1"):
        model.load_state_dict({**good, "W1": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="b2"):
        model.load_state_dict({**good, "b2": np.full(2, np.inf)})
    np.testing.assert_array_equal(model.state_dict()["W1"], good["W1"])  # nothing half-loaded
    with pytest.raises(TypeError, match="rng"):
        MLP.from_config(model.to_config())
    with pytest.raises(ValueError, match="config"):
        MLP.from_config({"dim": 2}, good)
