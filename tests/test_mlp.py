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
        fd = fd_param_gradient(loss_at, base, name)
        assert np.abs(fd).max() > 1e-4, f"{name}: gradient vanishes, the check would be vacuous"
        np.testing.assert_allclose(backend.to_numpy(g), fd, rtol=1e-6, atol=1e-9, err_msg=name)


def fd_param_gradient(loss_at: Any, base: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Central differences (float64) of ``loss_at(params)`` in every entry of ``base[name]``."""
    fd = np.zeros(base[name].shape)
    for idx in np.ndindex(fd.shape):
        plus = {k: v.copy() for k, v in base.items()}
        minus = {k: v.copy() for k, v in base.items()}
        plus[name][idx] += FD_H
        minus[name][idx] -= FD_H
        fd[idx] = (loss_at(plus) - loss_at(minus)) / (2 * FD_H)
    return fd


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


# ---- the label embedding ----------------------------------------------------------------------
K, E = 3, 4  # classes (labels 0..2, null label 3) and embedding width


def labelled(backend: Any = None, act: str = "silu", seed: int = 0, **kw: Any) -> MLP:
    like = None if backend is None else backend.asarray([0.0])
    kw = {"hidden": HIDDEN, "time_frequencies": F, "n_classes": K, "embedding_dim": E, **kw}
    return MLP(D, activation=act, rng=seed, like=like, **kw)


def reference_labelled(model: MLP, x: np.ndarray, t: Any, y: np.ndarray) -> np.ndarray:
    """The documented architecture with φ(x, t, y) = [x, t, sin, cos, E[y]], written out."""
    st_ = model.state_dict()
    n = x.shape[0]
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (n,))[:, None]
    om = 2 * np.pi * np.arange(1, F + 1)
    h = np.concatenate([x, tt, np.sin(om * tt), np.cos(om * tt), st_["embedding"][y]], axis=1)
    for i in range(1, len(HIDDEN) + 2):
        h = h @ st_[f"W{i}"] + st_[f"b{i}"]
        h = ACT_FN[model.activation](h) if i <= len(HIDDEN) else h
    return h


def mixed_labels(n: int = N) -> np.ndarray:
    """Every class and the null label, each at least once."""
    return np.arange(n) % (K + 1)


def test_unlabelled_model_is_unchanged_by_the_embedding() -> None:
    """Values recorded with fmref before the label embedding existed (commit 80b1853): the
    unlabelled model draws, evaluates and trains as it did (bit-identical on the recording
    machine; rtol 1e-12 leaves room for another BLAS)."""
    from fmref.marginals import MarginalPath
    from fmref.mixtures import eight_gaussians
    from fmref.schedules import Linear
    from fmref.train import TrainConfig, train

    g = np.random.default_rng(2024)
    x, t, target = g.standard_normal((5, 2)), g.uniform(size=5), g.standard_normal((5, 2))
    m = MLP(2, (6, 5), time_frequencies=2, rng=7)
    assert m.param_names == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert set(m.to_config()) == {"dim", "hidden", "activation", "time_frequencies", "dtype"}
    assert m.n_classes is None and m.null_label is None and "n_classes" not in repr(m)
    out = [-0.040135176829583494, -0.05822160842940779, 0.0052154499968114654,
           -0.026520677659735058, -0.009178790025519818, 0.005243880187704953,
           -0.01803255529332356, -0.04045604211897868, -0.01998029454623438,
           -0.003917933377558647]  # fmt: skip
    np.testing.assert_allclose(m(x, t).ravel(), out, rtol=1e-12, atol=0)
    loss, grads = m.loss_and_grad(x, t, target)
    assert loss == pytest.approx(1.7017675439906566, rel=1e-12, abs=0)
    l1 = [0.42726766837786245, 0.08939290149798668, 0.2238506958978862, 0.09800688154968384,
          3.381114874017123, 1.7913411352142532]  # fmt: skip
    np.testing.assert_allclose([np.abs(a).sum() for a in grads], l1, rtol=1e-12, atol=0)
    div = [-0.015414937128304256, -0.023424742871984955, 0.00517408065474643,
           -0.020864233470048725, 0.0005411927519270547]  # fmt: skip
    np.testing.assert_allclose(m.divergence(x, t), div, rtol=1e-12, atol=0)
    res = train(
        MLP(2, (16, 16), rng=0),
        MarginalPath(eight_gaussians(), Linear()),
        TrainConfig(steps=5, batch=64, lr=3e-3, eval_n=256, floor_n=512),
    )
    losses = [31.343667004234412, 27.680575734446023, 27.69081191518609, 25.673127045173338,
              27.84589337137615]  # fmt: skip
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="no label embedding"):
        m(x, t, y=0)


def test_labelled_layers_draw_like_the_documented_initialisation() -> None:
    """The table is drawn after the layers, from the same Generator, N(0, 1)."""
    m = labelled(seed=5)
    g = np.random.default_rng(5)
    widths = [D + 1 + 2 * F + E, *HIDDEN, D]
    for i in range(len(widths) - 1):
        fan_in, fan_out = widths[i], widths[i + 1]
        std = 0.1 / np.sqrt(fan_in) if i == len(HIDDEN) else np.sqrt(2.0 / fan_in)
        np.testing.assert_array_equal(
            m.state_dict()[f"W{i + 1}"], g.standard_normal((fan_in, fan_out)) * std
        )
    np.testing.assert_array_equal(m.state_dict()["embedding"], g.standard_normal((K + 1, E)))
    assert m.param_names[-1] == "embedding" and m.null_label == K
    assert m.n_params == sum(v.size for v in m.state_dict().values())


def test_labelled_forward_matches_reference(backend: Any) -> None:
    x, t, _ = problem(12)
    y = mixed_labels()
    m = labelled(backend, seed=3)
    got = backend.to_numpy(m(backend.asarray(x), backend.asarray(t), y=y))
    np.testing.assert_allclose(got, reference_labelled(m, x, t, y), rtol=1e-12, atol=1e-14)
    # y=None is the null label on every row; one int is that label on every row.
    xb, tb = backend.asarray(x), backend.asarray(t)
    np.testing.assert_array_equal(
        backend.to_numpy(m(xb, tb)), backend.to_numpy(m(xb, tb, y=np.full(N, K)))
    )
    np.testing.assert_array_equal(
        backend.to_numpy(m(xb, tb, y=np.int64(1))), backend.to_numpy(m(xb, tb, y=np.full(N, 1)))
    )
    # The label matters: another label gives another field.
    assert not np.allclose(backend.to_numpy(m(xb, tb, y=0)), backend.to_numpy(m(xb, tb, y=1)),
                           rtol=0, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("act", ACTS)
def test_embedding_gradients_match_central_differences(act: str) -> None:
    """Every parameter, the table included, against central differences in float64."""
    x, t, target = problem(13)
    y = mixed_labels()
    y[y == 2] = 0  # class 2 never appears: its row of the table must get exactly zero gradient
    m = labelled(act=act, seed=4)
    if act == "relu":  # differences of 1e-5 must not cross a kink
        st_ = m.state_dict()
        om, tt = 2 * np.pi * np.arange(1, F + 1), t[:, None]
        h = np.concatenate([x, tt, np.sin(om * tt), np.cos(om * tt), st_["embedding"][y]], 1)
        for i in range(1, len(HIDDEN) + 1):
            z = h @ st_[f"W{i}"] + st_[f"b{i}"]
            assert np.abs(z).min() > 1e-3
            h = np.maximum(z, 0)
    loss, grads = m.loss_and_grad(x, t, target, y=y)
    base = m.state_dict()

    def loss_at(state: dict) -> float:
        m.load_state_dict(state)
        r = m(x, t, y=y) - target
        return float(np.mean(np.sum(r * r, axis=1)))

    assert loss == pytest.approx(loss_at(base), rel=1e-13, abs=0)
    for name, g in zip(m.param_names, grads, strict=True):
        fd = fd_param_gradient(loss_at, base, name)
        assert np.abs(fd).max() > 1e-4, name
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9, err_msg=name)
    emb = grads[m.param_names.index("embedding")]
    assert np.all(emb[2] == 0) and np.all(np.abs(emb[[0, 1, K]]).max(axis=1) > 1e-4)
    # A plausible bug — the gradient of the rows summed into the first used label — fails.
    wrong = emb.copy()
    wrong[0] += wrong[1]
    wrong[1] = 0
    assert not np.allclose(wrong, emb, rtol=1e-6, atol=1e-9)


def test_embedding_gradients_on_every_backend(backend: Any) -> None:
    """The one-hot scatter-add of the table's gradient runs in every namespace alike."""
    x, t, target = problem(14)
    y = mixed_labels()
    ref = labelled(seed=6).loss_and_grad(x, t, target, y=y)[1]
    m = labelled(backend, seed=6)
    xb, tb, gb = (backend.asarray(a) for a in (x, t, target))
    yb = backend.xp.asarray(y, dtype=backend.xp.int64, device=backend.device)
    got = m.loss_and_grad(xb, tb, gb, y=yb)[1]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", ["silu", "tanh"])
def test_labelled_jacobian_and_divergence_match_central_differences(act: str) -> None:
    x, t, _ = problem(15)
    y = mixed_labels()
    m = labelled(act=act, seed=7)
    fd = np.zeros((N, D, D))
    for j in range(D):
        e = np.zeros(D)
        e[j] = FD_H
        fd[:, :, j] = (m(x + e, t, y=y) - m(x - e, t, y=y)) / (2 * FD_H)
    assert np.abs(fd).max() > 1e-3
    np.testing.assert_allclose(m.jacobian(x, t, y=y), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        m.divergence(x, t, y=y), np.trace(fd, axis1=1, axis2=2), rtol=1e-6, atol=1e-9
    )
    # The labels reach the tangents: the null label's Jacobian is another one.
    assert not np.allclose(m.jacobian(x, t), m.jacobian(x, t, y=y), rtol=0, atol=1e-8)


def test_labelled_jacobian_is_chunk_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    g = np.random.default_rng(16)
    x, t, y = g.standard_normal((600, D)), g.uniform(size=600), g.integers(0, K + 1, 600)
    m = labelled(seed=8)
    div = m.divergence(x, t, y=y)
    monkeypatch.setenv("FMREF_MEMORY_BUDGET", "512")
    np.testing.assert_allclose(m.divergence(x, t, y=y), div, rtol=1e-14, atol=1e-15)


def test_labelled_checkpoint_round_trip(tmp_path: Any) -> None:
    from fmref import _checkpoint

    x, t, _ = problem(17)
    y = mixed_labels()
    a = labelled(seed=9)
    cfg = json.loads(json.dumps(a.to_config()))
    assert cfg["n_classes"] == K and cfg["embedding_dim"] == E
    _checkpoint.save(tmp_path / "m.npz", {"model_config": cfg}, {"model": a.state_dict()})
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert "magic" in f.files  # written by fmref's own writer
    b = MLP.from_config(cfg, a.state_dict())
    assert b.null_label == K and b.param_names == a.param_names
    np.testing.assert_array_equal(b(x, t, y=y), a(x, t, y=y))
    # An unlabelled config cannot take a labelled state, nor the reverse.
    plain = {k: v for k, v in cfg.items() if k not in ("n_classes", "embedding_dim")}
    with pytest.raises(ValueError, match="unexpected"):
        MLP.from_config(plain, a.state_dict())
    with pytest.raises(ValueError, match="n_classes"):
        MLP.from_config({**plain, "n_classes": K}, a.state_dict())
    other = MLP.from_config({**cfg, "n_classes": K + 1}, rng=0)
    with pytest.raises(ValueError, match="embedding"):
        other.load_state_dict(a.state_dict())


def test_bad_labels() -> None:
    m = labelled()
    x, t = np.zeros((3, D)), 0.5
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\]"):
        m(x, t, y=K + 1)
    with pytest.raises(ValueError, match=r"y must lie in"):
        m(x, t, y=np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        m(x, t, y=np.array([0, 1]))
    with pytest.raises(TypeError, match="y must be an int"):
        m(x, t, y=np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="y must be an int"):
        m(x, t, y=True)
    with pytest.raises(ValueError, match="n_classes"):
        MLP(D, (4,), n_classes=0, rng=0)
    with pytest.raises(TypeError, match="n_classes"):
        MLP(D, (4,), n_classes=2.0, rng=0)
    with pytest.raises(ValueError, match="embedding_dim"):
        MLP(D, (4,), n_classes=2, embedding_dim=0, rng=0)
    plain = MLP(D, (4,), rng=0)
    with pytest.raises(ValueError, match="label embedding"):
        plain.backward(m.forward(x, t)[1], np.zeros((3, D)))


def test_guided_mlp_combines_the_two_fields_exactly() -> None:
    from fmref.mlp import GuidedMLP

    x, t, _ = problem(18)
    m = labelled(seed=10)
    u0, u1 = m(x, t), m(x, t, y=1)
    for w in (0.0, 1.0, 2.5):
        gm = GuidedMLP(m, 1, w)
        want = u0 + w * (u1 - u0)  # the "delta" spelling, written independently
        np.testing.assert_allclose(gm.vector_field(x, t), want, rtol=1e-13, atol=1e-15)
        fd = np.zeros((N, D, D))
        for j in range(D):
            e = np.zeros(D)
            e[j] = FD_H
            fd[:, :, j] = (gm(x + e, t) - gm(x - e, t)) / (2 * FD_H)
        np.testing.assert_allclose(gm.jacobian(x, t), fd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(
            gm.divergence(x, t), np.trace(fd, axis1=1, axis2=2), rtol=1e-6, atol=1e-9
        )
    # The check catches the other convention's weight (ω = w − 1 read as w).
    wrong = u0 + 1.5 * (u1 - u0)
    assert not np.allclose(GuidedMLP(m, 1, 2.5)(x, t), wrong, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="label-conditioned"):
        GuidedMLP(MLP(D, (4,), rng=0), 0, 1.0)
    with pytest.raises(ValueError, match="w must be >= 0"):
        GuidedMLP(m, 0, -1.0)
