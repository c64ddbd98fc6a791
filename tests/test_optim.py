"""Adam: a two-step case worked by hand, decoupled weight decay, clipping, schedules, state."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fmref.mlp import MLP
from fmref.optim import Adam, cosine_decay, cosine_schedule

EPS = 1e-8


def test_two_steps_by_hand(backend: Any) -> None:
    """p0 = (1, −2), g1 = (0.5, −1), g2 = (0.25, 2), lr 0.1, β = (0.9, 0.99).

    Step 1: m = 0.1 g1 = (0.05, −0.1), v = 0.01 g1² = (0.0025, 0.01); bias corrections 0.1 and
    0.01 give m̂ = g1, √v̂ = |g1|, so p1 = p0 − 0.1 sign(g1) (up to ε) = (0.9, −1.9).
    Step 2: m = 0.9 m + 0.1 g2 = (0.045 + 0.025, −0.09 + 0.2) = (0.07, 0.11);
    v = 0.99 v + 0.01 g2² = (0.002475 + 0.000625, 0.0099 + 0.04) = (0.0031, 0.0499);
    bias corrections 1 − 0.9² = 0.19 and 1 − 0.99² = 0.0199.
    """
    p = backend.asarray([1.0, -2.0])
    opt = Adam([p], lr=0.1, betas=(0.9, 0.99), eps=EPS)
    opt.step([backend.asarray([0.5, -1.0])])
    p1 = [1.0 - 0.1 * 0.5 / (0.5 + EPS), -2.0 + 0.1 * 1.0 / (1.0 + EPS)]
    np.testing.assert_allclose(backend.to_numpy(p), p1, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p1, [0.9, -1.9], rtol=0, atol=1e-8)
    opt.step([backend.asarray([0.25, 2.0])])
    p2 = [
        p1[0] - 0.1 * (0.07 / 0.19) / (math.sqrt(0.0031 / 0.0199) + EPS),
        p1[1] - 0.1 * (0.11 / 0.19) / (math.sqrt(0.0499 / 0.0199) + EPS),
    ]
    np.testing.assert_allclose(backend.to_numpy(p), p2, rtol=1e-14, atol=1e-15)
    state = opt.state_dict()
    np.testing.assert_allclose(state["m.0"], [0.07, 0.11], rtol=1e-14, atol=0)
    np.testing.assert_allclose(state["v.0"], [0.0031, 0.0499], rtol=1e-14, atol=0)
    assert opt.step_count == 2 and int(state["step_count"]) == 2


def test_weight_decay_is_decoupled() -> None:
    """λ = 0.1, lr = 0.1: θ ← θ (1 − 0.01) then the Adam step (AdamW), not g + λθ (L2)."""
    p = np.array([2.0, 1.0])
    opt = Adam([p], lr=0.1, weight_decay=0.1, eps=EPS)
    opt.step([np.array([0.0, 0.5])])
    # Coupled L2 would give 2 − 0.1 = 1.9 for the first entry (g' = 0.2 and a sign step).
    want = [2.0 * 0.99, 1.0 * 0.99 - 0.1 * 0.5 / (0.5 + EPS)]
    np.testing.assert_allclose(p, want, rtol=1e-15, atol=1e-15)


def test_global_norm_clipping() -> None:
    """Gradients (3, 0) and (4,) have global norm 5; with c = 1 Adam sees (0.6, 0), (0.8,)."""
    a, b = np.zeros(2), np.zeros(1)
    opt = Adam([a, b], lr=0.1, betas=(0.9, 0.99), clip_norm=1.0)
    opt.step([np.array([3.0, 0.0]), np.array([4.0])])
    st = opt.state_dict()
    np.testing.assert_allclose(st["m.0"], [0.1 * 0.6, 0.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(st["m.1"], [0.1 * 0.8], rtol=1e-15, atol=0)
    np.testing.assert_allclose(st["v.1"], [0.01 * 0.64], rtol=1e-14, atol=0)
    assert opt.last_grad_norm == pytest.approx(5.0, rel=1e-15, abs=0)
    # Below the threshold nothing is rescaled: norm 0.5 < 1.
    opt.step([np.array([0.3, 0.0]), np.array([0.4])])
    np.testing.assert_allclose(
        opt.state_dict()["m.1"], [0.9 * 0.08 + 0.1 * 0.4], rtol=1e-15, atol=0
    )


def test_cosine_decay_values_and_use() -> None:
    s = cosine_decay(4)
    got = [s(k) for k in range(6)]
    want = [
        1.0,
        0.5 * (1 + math.cos(math.pi / 4)),
        0.5,
        0.5 * (1 + math.cos(3 * math.pi / 4)),
        0,
        0,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-16)
    w = cosine_decay(6, warmup=2)
    np.testing.assert_allclose(
        [w(0), w(1), w(2), w(4)], [0.5, 1.0, 1.0, 0.5], rtol=1e-15, atol=1e-16
    )
    p = np.array([1.0])
    opt = Adam([p], lr=0.1, eps=EPS, schedule=lambda k: 0.5)
    opt.step([np.array([2.0])])  # first step is a sign step of size lr · 0.5
    np.testing.assert_allclose(p, [1.0 - 0.05 * 2.0 / (2.0 + EPS)], rtol=1e-15, atol=0)
    assert opt.last_lr == 0.05


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_matches_torch(weight_decay: float) -> None:
    """An independent implementation: torch.optim.Adam / AdamW over 5 random steps (float64)."""
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(0)
    ours = [g.standard_normal((3, 4)), g.standard_normal(4)]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in ours]
    cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    kw = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": weight_decay}
    topt = cls(theirs, **kw)
    opt = Adam(ours, **kw)
    for _ in range(5):
        grads = [g.standard_normal(a.shape) for a in ours]
        for tp, gr in zip(theirs, grads, strict=True):
            tp.grad = torch.tensor(gr)
        topt.step()
        opt.step(grads)
    for a, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_state_round_trip_resumes_identically() -> None:
    g = np.random.default_rng(1)
    grads = [[g.standard_normal((2, 3)), g.standard_normal(3)] for _ in range(5)]
    a = [np.ones((2, 3)), np.zeros(3)]
    opt = Adam(a, lr=0.05, weight_decay=0.01, clip_norm=2.0)
    for gr in grads[:3]:
        opt.step(gr)
    b = [p.copy() for p in a]
    opt_b = Adam(b, lr=0.05, weight_decay=0.01, clip_norm=2.0)
    opt_b.load_state_dict(opt.state_dict())
    for gr in grads[3:]:
        opt.step(gr)
        opt_b.step(gr)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p, q)
    assert opt_b.step_count == 5


def test_trains_an_mlp_and_keeps_float32() -> None:
    """Fit u(x, t) = −x: the loss falls a hundredfold; float32 stays float32 throughout."""
    g = np.random.default_rng(2)
    x = g.standard_normal((64, 2)).astype(np.float32)
    t = g.uniform(size=64).astype(np.float32)
    model = MLP(2, (32, 32), dtype="float32", rng=3)
    opt = Adam(model.params, lr=1e-2, schedule=cosine_decay(300))
    first = model.loss_and_grad(x, t, -x)[0]
    for _ in range(300):
        loss, grads = model.loss_and_grad(x, t, -x)
        opt.step(grads)
    assert loss < first / 100
    assert all(p.dtype == np.float32 for p in model.params)
    assert all(s.dtype == np.float32 for k, s in opt.state_dict().items() if k != "step_count")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"betas": (1.0, 0.9)}, r"betas\[0\]"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"clip_norm": 0.0}, "clip_norm"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Adam([np.zeros(2)], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": "0.1"}, "lr"),
        ({"lr": True}, "lr"),
        ({"betas": (0.9, None)}, r"betas\[1\]"),
        ({"schedule": "cosine"}, "schedule"),
    ],
)
def test_wrong_hyper_parameter_types(kwargs: dict, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        Adam([np.zeros(2)], **kwargs)


def test_bad_steps_leave_parameters_untouched() -> None:
    with pytest.raises(ValueError, match="params"):
        Adam([])
    p = np.array([1.0, 2.0])
    opt = Adam([p], schedule=lambda k: -1.0 if k == 1 else 1.0)
    with pytest.raises(ValueError, match="grads must hold 1"):
        opt.step([np.zeros(2), np.zeros(2)])
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        opt.step([np.zeros(3)])
    with pytest.raises(ValueError, match="finite"):
        opt.step([np.array([np.nan, 1.0])])
    with pytest.raises(TypeError, match=r"grads\[0\] must be an array of the params' namespace"):
        opt.step([np.zeros(2, dtype=np.float32)])
    np.testing.assert_array_equal(p, [1.0, 2.0])
    assert opt.step_count == 0
    opt.step([np.ones(2)])
    before = p.copy()
    with pytest.raises(ValueError, match=r"schedule\(1\)"):
        opt.step([np.ones(2)])
    np.testing.assert_array_equal(p, before)
    with pytest.raises(ValueError, match="state keys"):
        opt.load_state_dict({"step_count": np.int64(1)})
    with pytest.raises(ValueError, match=r"v\.0"):
        opt.load_state_dict({"step_count": np.int64(1), "m.0": np.zeros(2), "v.0": -np.ones(2)})
    with pytest.raises(ValueError, match="total_steps"):
        cosine_decay(0)
    with pytest.raises(ValueError, match="warmup"):
        cosine_decay(5, warmup=5)


def test_cosine_schedule_is_a_deprecated_alias_of_cosine_decay() -> None:
    with pytest.warns(DeprecationWarning, match="cosine_decay"):
        old = cosine_schedule(10, warmup=2)
    new = cosine_decay(10, warmup=2)
    assert [old(k) for k in range(12)] == [new(k) for k in range(12)]
