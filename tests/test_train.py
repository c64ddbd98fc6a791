"""Training loops (Algorithms 3 and 4, marginal FM), checkpoints, resumption and bad input."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from fmref.marginals import MarginalPath
from fmref.mixtures import GaussianMixture, eight_gaussians
from fmref.mlp import MLP
from fmref.schedules import Cosine, Linear, SqrtBeta
from fmref.train import StepInfo, TrainConfig, load_checkpoint, train

SMALL: dict[str, Any] = dict(batch=64, lr=3e-3, eval_n=256, floor_n=512)


def linear_mp() -> MarginalPath:
    return MarginalPath(eight_gaussians(), Linear())


def net(seed: int = 0, **kw: Any) -> MLP:
    return MLP(2, (16, 16), rng=seed, **kw)


class Recorder:
    """Wrap a model and keep every minibatch (x, t, target) passed to loss_and_grad."""

    def __init__(self, model: MLP) -> None:
        self.model = model
        self.batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.labels: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, x: Any, t: Any, **kw: Any) -> Any:
        return self.model(x, t, **kw)

    def loss_and_grad(self, x: Any, t: Any, target: Any, **kw: Any) -> Any:
        self.batches.append((np.array(x), np.array(t), np.array(target)))
        if "y" in kw:
            self.labels.append(np.array(kw["y"]))
        return self.model.loss_and_grad(x, t, target, **kw)


@pytest.mark.parametrize(
    ("schedule", "objective"), [(Linear(), "linear"), (Cosine(), "cfm")], ids=["alg4", "alg3"]
)
def test_minibatches_follow_the_algorithm(schedule: Any, objective: str) -> None:
    """Invert (x, target) = (αz + βε, α̇z + β̇ε) per row: z must be p_data, ε N(0, I), t U[0,1)."""
    data = GaussianMixture([0.3, 0.7], [[2.0, 0.0], [-1.0, 3.0]], [[0.5, 0.2], [1.0, 0.3]])
    mp = MarginalPath(data, schedule)
    rec = Recorder(net())
    train(rec, mp, TrainConfig(steps=40, objective=objective, **SMALL))
    x, t, target = (np.concatenate(a) for a in zip(*rec.batches, strict=True))
    assert x.shape == target.shape == (40 * 64, 2) and t.shape == (40 * 64,)
    s = schedule(t)
    det = s.alpha * s.beta_dot - s.beta * s.alpha_dot
    z = (s.beta_dot[:, None] * x - s.beta[:, None] * target) / det[:, None]
    eps = (s.alpha[:, None] * target - s.alpha_dot[:, None] * x) / det[:, None]
    n = t.size
    assert stats.kstest(t, "uniform").pvalue > 1e-3 and t.min() >= 0 and t.max() < 1
    np.testing.assert_allclose(eps.mean(0), 0, rtol=0, atol=4.5 / math.sqrt(n))
    np.testing.assert_allclose(np.cov(eps.T), np.eye(2), rtol=0, atol=6 * math.sqrt(2 / n))
    sd = np.sqrt(np.diag(data.covariance()))
    np.testing.assert_array_less(np.abs(z.mean(0) - data.mean()), 4.5 * sd / math.sqrt(n))
    np.testing.assert_allclose(np.cov(z.T), data.covariance(), rtol=0.1, atol=0.05)
    # ε is independent of z: their cross-covariance vanishes.
    cross = (z - z.mean(0)).T @ (eps - eps.mean(0)) / n
    np.testing.assert_allclose(cross, 0, rtol=0, atol=5 * sd.max() / math.sqrt(n))


def test_algorithm3_on_linear_is_algorithm4() -> None:
    mp = linear_mp()
    a, b = net(), net()
    cfg: dict[str, Any] = dict(steps=30, **SMALL)
    ra = train(a, mp, TrainConfig(objective="cfm", **cfg))
    rb = train(b, mp, TrainConfig(objective="linear", **cfg))
    for p, q in zip(a.params, b.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(ra.losses, rb.losses)


def test_marginal_objective_targets_the_exact_field() -> None:
    mp = MarginalPath(eight_gaussians(), Cosine())
    rec = Recorder(net())
    train(rec, mp, TrainConfig(steps=3, objective="marginal", **SMALL))
    for x, t, target in rec.batches:
        u = mp.vector_field(x, t)
        np.testing.assert_allclose(target, u, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["linear", "marginal"])
def test_training_reduces_fm_loss(objective: str) -> None:
    mp = linear_mp()
    cfg = TrainConfig(steps=400, batch=128, lr=3e-3, objective=objective, eval_every=200,
                      eval_n=2000, floor_n=2000)  # fmt: skip
    res = train(MLP(2, (32, 32), rng=1), mp, cfg)
    assert res.losses.shape == (400,) and np.all(np.isfinite(res.losses))
    assert [e.step for e in res.evaluations] == [200, 400]
    start = train(MLP(2, (32, 32), rng=1), mp, TrainConfig(steps=1, lr=1e-9, eval_n=2000))
    assert res.final.relative_fm_loss < 0.3 < start.final.relative_fm_loss
    assert res.floor.finite and res.floor.value > 0 and res.wall_time > 0


@pytest.mark.slow
def test_both_losses_lead_to_the_same_field() -> None:
    mp = linear_mp()
    kw: dict[str, Any] = dict(steps=600, batch=128, lr=3e-3, eval_n=2000, floor_n=512)
    a = train(MLP(2, (32, 32), rng=2), mp, TrainConfig(objective="linear", **kw))
    b = train(MLP(2, (32, 32), rng=2), mp, TrainConfig(objective="marginal", **kw))
    from fmref.losses import fm_loss

    # Distance between the two learned fields, measured like fm_loss with the other as "u".
    g = np.random.default_rng(0)
    t = g.random(2000)
    x = mp.sample(2000, t, rng=g)
    gap = np.mean(np.sum((a.model(x, t) - b.model(x, t)) ** 2, axis=1))
    u2 = np.mean(np.sum(mp.vector_field(x, t) ** 2, axis=1))
    assert gap / u2 < 0.2
    for r in (a, b):
        assert (fm_loss(r.model, mp, n=2000, rng=1).relative or 1.0) < 0.2


def test_callback_sees_every_step() -> None:
    seen: list[StepInfo] = []
    res = train(
        net(), linear_mp(), TrainConfig(steps=12, eval_every=5, **SMALL), callback=seen.append
    )
    assert [s.step for s in seen] == list(range(1, 13))
    assert all(s.floor == res.floor.value and s.steps == 12 for s in seen)
    assert [s.step for s in seen if s.evaluation] == [5, 10, 12]
    np.testing.assert_array_equal([s.loss for s in seen], res.losses)


@pytest.mark.parametrize("objective", ["cfm", "marginal"])
def test_resume_is_bit_for_bit(tmp_path: Path, objective: str) -> None:
    mp = MarginalPath(eight_gaussians(), Cosine())
    cfg = TrainConfig(steps=40, eval_every=10, objective=objective, **SMALL)
    straight = train(net(), mp, cfg)
    ck = tmp_path / "ck.npz"
    half = train(net(), mp, cfg, checkpoint=ck, stop_at=20)
    assert half.losses.shape == (20,) and load_checkpoint(ck)["step"] == 20
    resumed = train(net(seed=99), mp, cfg, checkpoint=ck, resume=ck)
    assert resumed.start_step == 20
    for p, q in zip(straight.model.params, resumed.model.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(straight.losses, resumed.losses)
    assert straight.evaluations == resumed.evaluations
    assert straight.optimizer.step_count == resumed.optimizer.step_count == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no temp files left


def test_resume_from_periodic_checkpoint(tmp_path: Path) -> None:
    mp = linear_mp()
    cfg = TrainConfig(steps=30, checkpoint_every=10, objective="linear", **SMALL)
    ck = tmp_path / "run" / "ck.npz"
    straight = train(net(), mp, cfg, checkpoint=ck)
    with np.load(ck, allow_pickle=False) as z:  # plain arrays only, no pickle
        meta = json.loads(str(z["meta"]))
    assert meta["step"] == 30 and meta["model_config"] == net().to_config()
    mid = tmp_path / "mid.npz"
    train(net(), mp, cfg, checkpoint=mid, stop_at=10)
    resumed = train(net(), mp, cfg, resume=mid)
    for p, q in zip(straight.model.params, resumed.model.params, strict=True):
        np.testing.assert_array_equal(p, q)


def test_non_finite_loss_names_the_step_and_keeps_checkpoint(tmp_path: Path) -> None:
    model = net()
    real = model.loss_and_grad
    calls = {"n": 0}

    def poisoned(x: Any, t: Any, target: Any) -> Any:
        calls["n"] += 1
        loss, grads = real(x, t, target)
        return (math.nan if calls["n"] == 7 else loss), grads

    model.loss_and_grad = poisoned  # type: ignore[method-assign]
    ck = tmp_path / "ck.npz"
    cfg = TrainConfig(steps=20, checkpoint_every=5, **SMALL)
    with pytest.raises(ValueError, match=r"step 7.*ck\.npz"):
        train(model, linear_mp(), cfg, checkpoint=ck, callback=lambda s: None)
    before = [np.array(p) for p in model.params]
    good = load_checkpoint(ck)
    assert good["step"] == 5
    # The bad step was not applied: parameters are exactly those after step 6.
    after_six = train(net(), linear_mp(), cfg, stop_at=6).model.params
    for p, q in zip(before, after_six, strict=True):
        np.testing.assert_array_equal(p, q)


def test_non_finite_gradient_names_the_step() -> None:
    model = net()
    real = model.loss_and_grad
    calls = {"n": 0}

    def poisoned(x: Any, t: Any, target: Any) -> Any:
        calls["n"] += 1
        loss, grads = real(x, t, target)
        return loss, [g * math.nan for g in grads] if calls["n"] == 3 else grads

    model.loss_and_grad = poisoned  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"step 3: grads must be finite"):
        train(model, linear_mp(), TrainConfig(steps=5, **SMALL))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(lr=-1e-3), "lr"),
        (dict(lr=0.0), "lr"),
        (dict(lr=math.nan), "lr"),
        (dict(batch=0), "batch"),
        (dict(steps=0), "steps"),
        (dict(objective="sgd"), "objective"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(lr_schedule="step"), "lr_schedule"),
    ],
)
def test_invalid_hyper_parameters(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_invalid_model_and_objective() -> None:
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, (0, 16), rng=0)
    with pytest.raises(ValueError, match="Linear"):
        train(net(), MarginalPath(eight_gaussians(), Cosine()), TrainConfig(objective="linear"))
    with pytest.raises(ValueError, match="stop_at"):
        train(net(), linear_mp(), TrainConfig(steps=2, **SMALL), stop_at=0)


def test_singular_schedule_reports_infinite_floor() -> None:
    res = train(net(), MarginalPath(eight_gaussians(), SqrtBeta()), TrainConfig(steps=3, **SMALL))
    assert math.isinf(res.floor.value) and "infinite" in (res.floor.warning or "")


@pytest.fixture
def good_checkpoint(tmp_path: Path) -> Path:
    ck = tmp_path / "good.npz"
    train(net(), linear_mp(), TrainConfig(steps=4, **SMALL), checkpoint=ck)
    return ck


def _rewrite(src: Path, dst: Path, **changes: Any) -> Path:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(dst, **arrays)
    return dst


def test_corrupt_or_foreign_checkpoints_are_refused(good_checkpoint: Path, tmp_path: Path) -> None:
    raw = good_checkpoint.read_bytes()
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    meta = json.loads(str(np.load(good_checkpoint)["meta"]))
    bad_schema = _rewrite(good_checkpoint, tmp_path / "schema.npz",
                          meta=np.array(json.dumps(dict(meta, schema=99))))  # fmt: skip
    bad_magic = _rewrite(good_checkpoint, tmp_path / "magic.npz", magic=np.array("torch"))
    extra = _rewrite(good_checkpoint, tmp_path / "extra.npz", sneaky=np.zeros(2))
    missing = _rewrite(good_checkpoint, tmp_path / "missing.npz", **{"a/0": None})
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, magic=np.array("fmref-checkpoint"), meta=np.array([{"a": 1}], dtype=object))
    cases = [
        (truncated, "not a valid fmref checkpoint"),
        (garbage, "not a valid fmref checkpoint"),
        (foreign, "magic"),
        (bad_schema, "schema 99"),
        (bad_magic, "wrong magic"),
        (extra, "unexpected arrays"),
        (missing, "missing array"),
        (pickled, "not a valid fmref checkpoint"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            load_checkpoint(path)
        with pytest.raises(ValueError, match=match):
            train(net(), linear_mp(), TrainConfig(steps=8, **SMALL), resume=path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz")


def test_resume_refuses_mismatches(good_checkpoint: Path) -> None:
    mp = linear_mp()
    with pytest.raises(ValueError, match="lr"):
        train(net(), mp, TrainConfig(steps=4, **dict(SMALL, lr=1e-2)), resume=good_checkpoint)
    with pytest.raises(ValueError, match="model"):
        train(MLP(2, (8,), rng=0), mp, TrainConfig(steps=4, **SMALL), resume=good_checkpoint)
    other = MarginalPath(eight_gaussians(radius=3.0), Linear())
    with pytest.raises(ValueError, match="data set or schedule"):
        train(net(), other, TrainConfig(steps=4, **SMALL), resume=good_checkpoint)


def test_resume_with_another_steps_is_refused_unless_the_lr_is_constant(tmp_path: Path) -> None:
    ck = tmp_path / "ck.npz"
    cos = TrainConfig(steps=10, **SMALL)
    train(net(), linear_mp(), cos, checkpoint=ck, stop_at=4)
    for steps in (6, 20):
        with pytest.raises(ValueError, match=r"steps=\d+ differs .* steps=10.*'cosine'"):
            train(net(), linear_mp(), TrainConfig(steps=steps, **SMALL), resume=ck)
    # Constant lr: extending the run gives exactly the uninterrupted longer run.
    const = dict(SMALL, lr_schedule="constant")
    ck2 = tmp_path / "ck2.npz"
    train(net(), linear_mp(), TrainConfig(steps=10, **const), checkpoint=ck2, stop_at=4)
    longer = train(net(), linear_mp(), TrainConfig(steps=16, **const), resume=ck2)
    straight = train(net(), linear_mp(), TrainConfig(steps=16, **const))
    for p, q in zip(straight.model.params, longer.model.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(straight.losses, longer.losses)
    # The cosine schedule really depends on steps: the same 4 steps taken under steps=20
    # instead of steps=10 give other parameters (so silently accepting it would be wrong).
    a = train(net(), linear_mp(), TrainConfig(steps=10, **SMALL), stop_at=4).model.params
    b = train(net(), linear_mp(), TrainConfig(steps=20, **SMALL), stop_at=4).model.params
    assert any(not np.array_equal(p, q) for p, q in zip(a, b, strict=True))


def test_backends_train_alike(backend: Any) -> None:
    like = backend.asarray(np.zeros(1))
    cfg = TrainConfig(steps=10, objective="linear", **SMALL)
    ref = train(net(), linear_mp(), cfg)
    got = train(net(like=like), linear_mp(), cfg)
    for p, q in zip(ref.model.params, got.model.params, strict=True):
        np.testing.assert_allclose(backend.to_numpy(q), p, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got.final.fm_loss, ref.final.fm_loss, rtol=1e-8, atol=0)


@pytest.mark.slow
def test_float32_model_trains(backend32: Any) -> None:
    like = backend32.asarray(np.zeros(1))
    cfg = TrainConfig(steps=200, objective="linear", **SMALL)
    ref = train(net(), linear_mp(), cfg)
    got = train(net(dtype="float32", like=like), linear_mp(), cfg)
    assert got.model.params[0].dtype == backend32.dtype
    assert np.all(np.isfinite(got.losses))
    # Same draws, float32 arithmetic: the exact yardstick agrees to float32-training accuracy.
    np.testing.assert_allclose(got.final.fm_loss, ref.final.fm_loss, rtol=0.05, atol=0)


# ---- classifier-free guidance training -------------------------------------------------------
def two_classes() -> GaussianMixture:
    """Class 0: two modes on the left; class 1: one mode on the right; far apart (8 sd)."""
    means = [[-4.0, -1.5], [-4.0, 1.5], [4.0, 0.0]]
    return GaussianMixture([0.3, 0.2, 0.5], means, [0.25, 0.25, 0.25], labels=[0, 0, 1])


def labelled_net(seed: int = 0, n_classes: int = 2, **kw: Any) -> MLP:
    return MLP(2, (16, 16), n_classes=n_classes, embedding_dim=4, rng=seed, **kw)


def test_cfg_minibatches_carry_the_label_of_z_with_dropout() -> None:
    """Labels come with z (nearest class of the recovered z) and drop to ∅ with prob. p."""
    data = two_classes()
    mp = MarginalPath(data, Linear())
    rec = Recorder(labelled_net())
    p = 0.25
    train(rec, mp, TrainConfig(steps=40, objective="linear", p_uncond=p, **SMALL))
    x, t, target = (np.concatenate(a) for a in zip(*rec.batches, strict=True))
    y = np.concatenate(rec.labels)
    n = y.size
    assert n == 40 * 64 and set(np.unique(y)) == {0, 1, 2}  # 2 is the null label
    drop = y == 2
    assert abs(drop.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    z = x + (1 - t)[:, None] * target  # Linear: x = t z + (1 − t) ε, target = z − ε
    true_class = (z[:, 0] > 0).astype(int)  # the classes are 16 sd apart on the x axis
    np.testing.assert_array_equal(y[~drop], true_class[~drop])
    # The dropped rows are still drawn from all of p_data (π_1 = 0.5), not from one class.
    k = drop.sum()
    assert abs(true_class[drop].mean() - 0.5) < 4 * math.sqrt(0.25 / k)
    # A plausible bug, labels drawn independently of z, would fail the first check.
    shuffled = np.random.default_rng(0).permutation(y[~drop])
    assert not np.array_equal(shuffled, true_class[~drop])


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_label_dropout_extremes(p: float) -> None:
    rec = Recorder(labelled_net())
    train(rec, MarginalPath(two_classes(), Linear()), TrainConfig(steps=3, p_uncond=p, **SMALL))
    y = np.concatenate(rec.labels)
    assert np.all(y == 2) if p == 1.0 else not np.any(y == 2)


def test_cfg_marginal_objective_targets_the_exact_conditional_fields() -> None:
    mp = MarginalPath(two_classes(), Cosine())
    rec = Recorder(labelled_net())
    train(rec, mp, TrainConfig(steps=4, objective="marginal", p_uncond=0.3, **SMALL))
    y = np.concatenate(rec.labels)
    assert 0 < (y == 2).sum() < y.size
    for (x, t, target), lab in zip(rec.batches, rec.labels, strict=True):
        kept = lab != 2
        u = mp.vector_field(x, t)
        uy = mp.vector_field(x[kept], t[kept], y=lab[kept])
        np.testing.assert_allclose(target[~kept], u[~kept], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(target[kept], uy, rtol=1e-12, atol=1e-12)
        # u_t(x | y) is not u_t(x) here: the two targets really differ.
        assert not np.allclose(uy, u[kept], rtol=0, atol=1e-3)


@pytest.mark.slow
def test_cfg_training_learns_the_conditional_field() -> None:
    """After CFG training, u^θ(· | y) is far closer to u_t(· | y) than u_t itself is: the label
    is used. The same check on the null-label field (which cannot know y) fails."""
    from fmref.losses import fm_loss

    data = two_classes()
    mp = MarginalPath(data, Linear())
    cfg = TrainConfig(steps=800, batch=128, lr=3e-3, p_uncond=0.2, eval_n=1000, floor_n=512)
    model = train(MLP(2, (32, 32), n_classes=2, rng=3), mp, cfg).model
    for c in (0, 1):
        cond = MarginalPath(data.given(c), mp.path)
        learned = fm_loss(lambda x, t, c=c: model(x, t, y=c), cond, n=4000, rng=c)
        exact_unconditional = fm_loss(mp.vector_field, cond, n=4000, rng=c)
        null = fm_loss(model, cond, n=4000, rng=c)
        assert learned.value < 0.25 * exact_unconditional.value, c
        assert null.value > 0.5 * exact_unconditional.value, c  # the wrong field fails
        assert (learned.relative or 1.0) < 0.1
    # The null label learned the unconditional field.
    assert (fm_loss(model, mp, n=4000, rng=5).relative or 1.0) < 0.1


def test_unlabelled_model_trains_alike_on_labelled_data() -> None:
    plain = MarginalPath(GaussianMixture([0.3, 0.2, 0.5], two_classes().means, [0.25] * 3),
                         Linear())  # fmt: skip
    cfg = TrainConfig(steps=10, eval_every=5, **SMALL)
    a = train(net(), plain, cfg)
    b = train(net(), MarginalPath(two_classes(), Linear()), cfg)
    for p, q in zip(a.model.params, b.model.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.evaluations == b.evaluations


@pytest.mark.parametrize("objective", ["linear", "marginal"])
def test_cfg_resume_is_bit_for_bit(tmp_path: Path, objective: str) -> None:
    mp = MarginalPath(two_classes(), Linear())
    cfg = TrainConfig(steps=20, eval_every=10, objective=objective, p_uncond=0.2, **SMALL)
    straight = train(labelled_net(), mp, cfg)
    ck = tmp_path / "ck.npz"
    train(labelled_net(), mp, cfg, checkpoint=ck, stop_at=10)
    saved = load_checkpoint(ck)
    assert saved["model_config"]["n_classes"] == 2 and "embedding" in saved["model"]
    assert saved["config"].p_uncond == 0.2 and saved["marginal"]["labels"] == [0, 0, 1]
    resumed = train(labelled_net(seed=9), mp, cfg, resume=ck)
    for p, q in zip(straight.model.params, resumed.model.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(straight.losses, resumed.losses)
    # Another dropout rate, or other labels on the same components, is another run.
    with pytest.raises(ValueError, match="p_uncond"):
        train(labelled_net(), mp, TrainConfig(**{**asdict(cfg), "p_uncond": 0.5}), resume=ck)
    relabelled = MarginalPath(
        GaussianMixture([0.3, 0.2, 0.5], two_classes().means, [0.25] * 3, labels=[0, 1, 1]),
        Linear(),
    )
    with pytest.raises(ValueError, match="data set"):
        train(labelled_net(), relabelled, cfg, resume=ck)


def test_checkpoint_without_p_uncond_still_loads(good_checkpoint: Path, tmp_path: Path) -> None:
    """Checkpoints written before label dropout existed have no p_uncond: it reads as 0."""
    meta = json.loads(str(np.load(good_checkpoint)["meta"]))
    assert meta["config"].pop("p_uncond") == 0.0
    old = _rewrite(good_checkpoint, tmp_path / "old.npz", meta=np.array(json.dumps(meta)))
    assert load_checkpoint(old)["config"].p_uncond == 0.0
    assert train(net(), linear_mp(), TrainConfig(steps=4, **SMALL), resume=old).start_step == 4


def test_cfg_training_refuses_mismatched_labels() -> None:
    labelled_mp = MarginalPath(two_classes(), Linear())
    with pytest.raises(ValueError, match="p_uncond"):
        TrainConfig(p_uncond=1.5)
    with pytest.raises(TypeError, match="p_uncond"):
        TrainConfig(p_uncond="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="p_uncond: label dropout needs"):
        train(net(), labelled_mp, TrainConfig(steps=2, p_uncond=0.1, **SMALL))
    with pytest.raises(ValueError, match="needs labelled data"):
        train(labelled_net(), linear_mp(), TrainConfig(steps=2, **SMALL))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\)"):
        train(labelled_net(n_classes=1), labelled_mp, TrainConfig(steps=2, **SMALL))


def test_cfg_training_on_every_backend(backend: Any) -> None:
    """Labels and label dropout reach the model alike in every namespace."""
    like = backend.asarray(np.zeros(1))
    mp = MarginalPath(two_classes(), Linear())
    cfg = TrainConfig(steps=8, objective="linear", p_uncond=0.3, **SMALL)
    ref = train(labelled_net(), mp, cfg)
    got = train(labelled_net(like=like), mp, cfg)
    for p, q in zip(ref.model.params, got.model.params, strict=True):
        np.testing.assert_allclose(backend.to_numpy(q), p, rtol=1e-8, atol=1e-10)
