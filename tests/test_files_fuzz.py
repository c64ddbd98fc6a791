"""Files nobody can poison: tampered, truncated, oversized, special, concurrent and killed files.

Every case must end in documented behaviour (a ValueError/TypeError/FileNotFoundError naming
the problem, or a correct result) and never hang: calls that could block run in a daemon thread
or a subprocess with a timeout. Each test prints one line saying what it tried (visible with
``pytest -s`` or in CI logs; ``-rA`` not needed). The quick form (default) runs in CI; set
``FMREF_FUZZ=full`` for more random tamperings.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmref import GaussianMixture, MarginalPath
from fmref._files import atomic_write, stale_temporaries, temp_path
from fmref.cli import main
from fmref.mixtures import eight_gaussians
from fmref.mlp import MLP
from fmref.optim import Adam
from fmref.schedules import SCHEDULES, Linear
from fmref.testing import load_suite, verify_suite, write_suite
from fmref.testing import vectors as vmod
from fmref.testing._npzio import sha256
from fmref.train import TrainConfig, load_checkpoint, train

FULL = os.environ.get("FMREF_FUZZ") == "full"
SMALL: dict[str, Any] = dict(batch=32, lr=3e-3, eval_n=64, floor_n=64)
ROOT = Path(__file__).resolve().parents[1]
#: Seconds any single file operation may take before the test calls it a hang.
HANG = 60.0


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print what a test tried, past pytest's capture."""
    with capsys.disabled():
        print(f"\n[files fuzz] {line}")


def within(fn: Callable[[], Any], seconds: float = HANG) -> Any:
    """Run ``fn`` in a daemon thread; return its result, re-raise its error, fail on a hang."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        pytest.fail(f"{fn} did not return within {seconds} s (hung)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def refused(fn: Callable[[], Any], kinds: tuple[type[BaseException], ...] = (ValueError,)) -> str:
    """Assert ``fn`` raises one of ``kinds`` (nothing else, no hang); return the message."""
    try:
        within(fn)
    except kinds as exc:
        return str(exc)
    except BaseException as exc:
        pytest.fail(f"expected {kinds}, got {type(exc).__name__}: {exc}")
    pytest.fail("expected a refusal, the call succeeded")


# ---- checkpoints ---------------------------------------------------------------------------


def net(seed: int = 0) -> MLP:
    return MLP(2, (8,), rng=seed)


def linear_mp() -> MarginalPath:
    return MarginalPath(eight_gaussians(), Linear())


@pytest.fixture(scope="module")
def good_ck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ck = tmp_path_factory.mktemp("ck") / "good.npz"
    train(net(), linear_mp(), TrainConfig(steps=3, eval_every=1, **SMALL), checkpoint=ck)
    return ck


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _with(path: Path, dst: Path, **changes: Any) -> Path:
    arrays = _arrays(path)
    arrays.update(changes)
    np.savez(dst, **{k: v for k, v in arrays.items() if v is not None})
    return dst


def _meta(path: Path) -> dict[str, Any]:
    return json.loads(str(_arrays(path)["meta"]))


def _with_meta(path: Path, dst: Path, meta: Any, raw: str | None = None) -> Path:
    return _with(path, dst, meta=np.array(json.dumps(meta) if raw is None else raw))


def _load_refused(path: Path, kinds: tuple[type[BaseException], ...] = (ValueError,)) -> str:
    msg = refused(lambda: load_checkpoint(path), kinds)
    cfg = TrainConfig(steps=3, eval_every=1, **SMALL)
    refused(lambda: train(net(), linear_mp(), cfg, resume=path), kinds)
    return msg


def _meta_tamperings(meta: dict[str, Any]) -> Iterator[tuple[str, Any, str | None]]:
    """(label, new meta, raw JSON text or None) for every tampering tried."""
    for key in list(meta):
        yield f"drop {key}", {k: v for k, v in meta.items() if k != key}, None
        for junk in (None, 1, 2.5, "x", [], {}, True):
            same = type(junk) is type(meta[key]) and junk == meta[key]
            if not same and (key, junk) != ("evaluations", []):  # [] is valid: none yet
                yield f"{key}={junk!r}", dict(meta, **{key: junk}), None
    for step in (-1, 1.5, "3", True, 10**30):
        yield f"step={step!r}", dict(meta, step=step), None
    model = meta["model"]
    first = next(iter(model["__dict__"]))
    nodes: list[Any] = [
        {"__array__": 5},
        {"__array__": ["a/0"]},
        {"__array__": "a/999"},
        {"__dict__": []},
        {"__list__": {}},
        {"__array__": "a/0", "__dict__": {}},
        {"__weird__": 1},
        [1, 2],
    ]
    for node in nodes:
        tampered = json.loads(json.dumps(model))
        tampered["__dict__"][first] = node
        yield f"model node {node!r}", dict(meta, model=tampered), None
    twice = json.loads(json.dumps(model))
    names = list(twice["__dict__"])
    twice["__dict__"][names[1]] = twice["__dict__"][names[0]]
    yield "an array used twice", dict(meta, model=twice), None
    deep: Any = {"__array__": "a/0"}
    for _ in range(200):
        deep = {"__list__": [deep]}
    yield "skeleton 200 deep", dict(meta, model=deep), None
    yield "JSON nested 100000 deep", None, "[" * 100_000 + "]" * 100_000
    yield "not JSON", None, "{nope"
    rng = meta["rng_state"]
    for label, bad_rng in (
        ("bit_generator MT19937 with a PCG64 state", dict(rng, bit_generator="MT19937")),
        ("bit_generator 'Generator'", dict(rng, bit_generator="Generator")),
        ("bit_generator ['PCG64']", dict(rng, bit_generator=["PCG64"])),
        ("state 'x'", dict(rng, state="x")),
        ("state without inc", dict(rng, state={"state": 1})),
        ("state -1", dict(rng, state={"state": -1, "inc": 1})),
    ):
        yield f"rng_state {label}", dict(meta, rng_state=bad_rng), None
    ev = meta["evaluations"][0]
    for k, v in (("step", "1"), ("step", 99), ("fm_loss", "big"), ("fm_loss", None), ("x", 1)):
        yield f"evaluation {k}={v!r}", dict(meta, evaluations=[dict(ev, **{k: v})]), None
    yield "evaluations a dict", dict(meta, evaluations={"a": 1}), None
    cfg = meta["config"]
    for k, v in (("lr", "fast"), ("steps", -3), ("lr_schedule", ["cosine"]), ("clip", 1)):
        yield f"config {k}={v!r}", dict(meta, config=dict(cfg, **{k: v})), None
    yield (
        "model dtype float16",
        dict(meta, model_config=dict(meta["model_config"], dtype="float16")),
        None,
    )
    yield "schema 2", dict(meta, schema=2), None
    yield "meta a list", [meta], None


def test_tampered_meta_is_a_clear_value_error(
    good_ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = _meta(good_ck)
    tried = 0
    for i, (label, new, raw) in enumerate(_meta_tamperings(meta)):
        path = _with_meta(good_ck, tmp_path / f"t{i}.npz", new, raw)
        msg = _load_refused(path)
        assert "not a valid fmref checkpoint" in msg, (label, msg)
        tried += 1
    report(capsys, f"checkpoint meta: {tried} tamperings, each a ValueError naming the file")
    assert tried > 80


def test_wrong_dtypes_are_refused(
    good_ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = _meta(good_ck)
    arrays = _arrays(good_ck)
    model_keys = [n["__array__"] for n in meta["model"]["__dict__"].values()]
    opt = meta["optimizer"]["__dict__"]
    moments = [v["__array__"] for k, v in opt.items() if k != "step_count"]
    step_key = opt["step_count"]["__array__"]
    cases = {
        "float16 weights": {model_keys[0]: arrays[model_keys[0]].astype(np.float16)},
        "float32 weights in a float64 model": {
            model_keys[0]: arrays[model_keys[0]].astype(np.float32)
        },
        "complex Adam moment": {moments[0]: arrays[moments[0]].astype(np.complex128)},
        "int Adam moment": {moments[1]: arrays[moments[1]].astype(np.int64)},
        "float step_count": {step_key: np.float64(3.0)},
        "string weights": {model_keys[0]: np.array(["a", "b"])},
        "bool weights": {model_keys[0]: arrays[model_keys[0]] > 0},
        "string magic as bytes": {"magic": np.array(b"fmref-checkpoint")},
        "meta as an array of two strings": {"meta": np.array([str(arrays["meta"])] * 2)},
    }
    for i, (label, change) in enumerate(cases.items()):
        msg = _load_refused(_with(good_ck, tmp_path / f"d{i}.npz", **change))
        assert "not a valid fmref checkpoint" in msg, (label, msg)
    # The same dtypes through the public state-dict API are a TypeError.
    model = net()
    state = model.state_dict()
    first = next(iter(state))
    for dt in (np.float16, np.complex128, np.int64, np.bool_):
        with pytest.raises(TypeError, match="float32 or float64"):
            model.load_state_dict({**state, first: state[first].astype(dt)})
    opt_ = Adam(model.params, lr=1e-3)
    good = opt_.state_dict()
    for dt in (np.complex128, np.int64, np.float16):
        with pytest.raises(TypeError, match=r"state\['m\.0'\] must be a float32 or float64"):
            opt_.load_state_dict({**good, "m.0": good["m.0"].astype(dt)})
    opt_.load_state_dict(good)  # the honest state still loads
    report(capsys, f"dtypes: {len(cases)} in files (ValueError), 7 through the API (TypeError)")


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _peak_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Return ``fn()`` and the peak MiB traced while it ran (NumPy's buffers included)."""
    tracemalloc.start()
    try:
        out = fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, peak / 2**20


def test_oversized_headers_and_bombs_are_refused_before_allocation(
    good_ck: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = _arrays(good_ck)
    members = {}
    for k, a in arrays.items():
        b = io.BytesIO()
        np.lib.format.write_array(b, a, allow_pickle=False)
        members[f"{k}.npy"] = b.getvalue()
    first = next(k for k in members if k.startswith("a/"))
    tried = []
    for shape in ((10**12,), (10**9,), (2**40, 2**40), (3,), (-1, -8)):
        bad = dict(members)
        bad[first] = _npy_header(shape) + b"\0" * 64
        path = tmp_path / f"shape{len(tried)}.npz"
        path.write_bytes(_zip(bad))
        msg, peak = _peak_mib(lambda p=path: refused(lambda: load_checkpoint(p)))
        assert re.search("header claims shape|negative", msg) and peak < 32, (shape, peak)
        tried.append(f"shape {shape} (peak {peak:.1f} MiB)")
    # A deflate bomb: 256 MiB of zeros compressed to a few hundred KiB.
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            if name != first:
                zf.writestr(name, data)
        n = 2**25
        with zf.open(first, "w", force_zip64=True) as m:
            m.write(_npy_header((n,)))
            chunk = bytes(2**20)
            for _ in range(n * 8 // len(chunk)):
                m.write(chunk)
    assert bomb.stat().st_size < 2**21
    msg, peak = _peak_mib(lambda: refused(lambda: load_checkpoint(bomb)))
    assert "compressed" in msg and peak < 32
    tried.append(f"deflate bomb 256 MiB in {bomb.stat().st_size // 1024} KiB (peak {peak:.1f} MiB)")
    # Members declaring more bytes than the file has; a member named twice.
    raw = bytearray(_zip(members))
    at = raw.index(b"PK\x01\x02")  # the first central-directory entry
    raw[at + 20 : at + 28] = (0xFFFFFFF0).to_bytes(4, "little") * 2  # its sizes: ~4 GiB
    liar = tmp_path / "liar.npz"
    liar.write_bytes(bytes(raw))
    assert "declare" in refused(lambda: load_checkpoint(liar))
    tried.append("a member declaring 4 GiB in a small file")
    twice = tmp_path / "twice.npz"
    with zipfile.ZipFile(twice, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(first, members[first])
    assert "twice" in refused(lambda: load_checkpoint(twice))
    tried.append("a member named twice")
    report(capsys, "oversized: " + "; ".join(tried))


def _special_files(tmp: Path) -> dict[str, tuple[Path, type[BaseException], str]]:
    """label → (path, exception, message pattern) for files that are not regular files."""
    (tmp / "a_dir").mkdir()
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    zero = tmp / "zero"
    zero.symlink_to("/dev/zero")
    dir_link = tmp / "dir_link"
    dir_link.symlink_to(tmp / "a_dir")
    broken = tmp / "broken"
    broken.symlink_to(tmp / "nowhere")
    loop = tmp / "loop"
    loop.symlink_to(loop)
    (tmp / "plain").write_bytes(b"x")
    return {
        "a directory": (tmp / "a_dir", ValueError, "is a directory"),
        "a FIFO": (fifo, ValueError, "is a FIFO"),
        "a symlink to /dev/zero": (zero, ValueError, "character device .*symbolic link"),
        "a symlink to a directory": (dir_link, ValueError, "is a directory .*symbolic link"),
        "a broken symlink": (broken, FileNotFoundError, "broken symbolic link"),
        "a symlink loop": (loop, ValueError, "cannot be opened"),
        "a file used as a folder": (tmp / "plain" / "x", ValueError, "cannot be opened"),
        "nothing": (tmp / "absent", FileNotFoundError, "does not exist"),
    }


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero (POSIX)")
def test_special_files_are_named_and_never_hang(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    specials = _special_files(tmp_path)
    for label, (path, exc, pattern) in specials.items():
        msg = refused(lambda p=path: load_checkpoint(p), (exc,))
        assert re.search(pattern, msg), (label, msg)
    report(capsys, f"checkpoints: {', '.join(specials)}: each named as what it is, no hang")


@settings(max_examples=200 if FULL else 25)
@given(data=st.data())
def test_random_corruption_is_refused_or_harmless(good_ck: Path, data: st.DataObject) -> None:
    raw = bytearray(good_ck.read_bytes())
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if how == "flip":
        for i in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4)):
            raw[i] ^= data.draw(st.integers(1, 255))
    elif how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=64))
    path = good_ck.parent / "corrupt.npz"
    path.write_bytes(bytes(raw))
    try:
        ck = within(lambda: load_checkpoint(path))
    except ValueError as exc:
        assert "not a valid fmref checkpoint" in str(exc)
        return
    # Loaded: then the change hit a byte the format ignores (a date, a comment); all equal.
    ref = load_checkpoint(good_ck)
    assert ck["step"] == ref["step"] and ck["rng_state"] == ref["rng_state"]
    for part in ("model", "optimizer"):
        for k, v in ref[part].items():
            np.testing.assert_array_equal(ck[part][k], v)


# ---- temporaries, concurrency, kills -------------------------------------------------------

_WRITER = """
import os, sys, time
from pathlib import Path
from fmref._files import atomic_write
def write(f):
    f.write(b"x" * 1000)
    f.flush()
    print("ready", flush=True)
    time.sleep(600)
atomic_write(Path(sys.argv[1]), write)
"""


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )


def _kill_when_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = within(proc.stdout.readline, 120)
    assert line.strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=HANG)


def test_killed_writer_leaves_no_partial_file_and_its_temporary_is_cleaned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    proc = _spawn(_WRITER, str(target))
    _kill_when_ready(proc)
    assert target.read_bytes() == b"old"  # never a partial file
    stale = stale_temporaries(target)
    assert len(stale) == 1 and f".{proc.pid}." in stale[0].name
    # Things the next write must not touch: a live writer's temporary (ours: this process),
    # a look-alike file of another name, a temporary of another target, a user's file.
    live = temp_path(target)
    live.write_bytes(b"in progress")
    keep = [
        live,
        tmp_path / ".out.bin.1234.tmp",
        tmp_path / f".other.bin{stale[0].name[len('.out.bin') :]}",
        tmp_path / "notes.txt",
    ]
    for p in keep[1:]:
        p.write_bytes(b"keep me")
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert not stale[0].exists() and all(p.exists() for p in keep)
    report(capsys, "killed writer: old file intact, its temporary removed, 4 others kept")


_TRAINER = """
import sys
from pathlib import Path
from fmref.mixtures import eight_gaussians
from fmref.marginals import MarginalPath
from fmref.mlp import MLP
from fmref.schedules import Linear
from fmref.train import TrainConfig, train
cfg = TrainConfig(steps=400, checkpoint_every=1, batch=32, lr=3e-3, eval_n=64, floor_n=64)
def cb(info):
    if info.step == 3:
        print("ready", flush=True)
train(MLP(2, (8,), rng=0), MarginalPath(eight_gaussians(), Linear()), cfg,
      checkpoint=Path(sys.argv[1]), callback=cb)
"""


def test_training_killed_mid_run_resumes_bit_for_bit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = tmp_path / "ck.npz"
    proc = _spawn(_TRAINER, str(ck))
    _kill_when_ready(proc)
    at = load_checkpoint(ck)["step"]  # a complete checkpoint, whatever the moment of the kill
    assert 3 <= at <= 400
    cfg = TrainConfig(steps=400, checkpoint_every=1, **SMALL)
    resumed = train(net(), linear_mp(), cfg, resume=ck, checkpoint=ck)
    straight = train(net(), linear_mp(), cfg)
    for p, q in zip(straight.model.params, resumed.model.params, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(straight.losses, resumed.losses)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # stale temporary cleaned
    report(capsys, f"SIGKILL during training: resumed from step {at}, bit for bit")


def test_concurrent_writers_of_one_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "same.bin"
    payloads = [bytes([i]) * 100_000 for i in range(4)]
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        barrier.wait()
        for _ in range(10):
            atomic_write(target, lambda f: f.write(payloads[i]))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(HANG)
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["same.bin"]
    report(capsys, "4 threads × 10 atomic writes of one file: a whole payload, no temporaries")


# ---- golden vectors ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vec") / "suite"
    write_suite(out, per_time=1)
    return out


def _copy(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


def _manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text())


def _set_manifest(root: Path, m: Any) -> None:
    (root / "manifest.json").write_text(json.dumps(m))


def _zero(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    n, d = inputs["x"].shape
    return np.zeros((n,) if q in ("log_prob", "divergence", "dlog_prob_dt") else (n, d))


def _verify_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """load_suite and verify_suite refuse; `fmref verify` exits 2 with a message, no traceback."""
    msg = refused(lambda: load_suite(root), (ValueError, FileNotFoundError))
    refused(lambda: verify_suite(root, _zero), (ValueError, FileNotFoundError))
    impl = ROOT / "tests" / "test_files_fuzz.py"
    code = within(lambda: main(["verify", str(root), "--impl", f"{impl}:_zero"]))
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and "Traceback" not in err, (code, err)
    return msg


def test_manifest_tampering_is_refused(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = _manifest(suite)
    root = _copy(suite, tmp_path / "s")
    c0 = base["cases"][0]

    def case(**kw: Any) -> dict[str, Any]:
        return dict(base, cases=[dict(c0, **kw), *base["cases"][1:]])

    tamperings: list[tuple[str, Any, str]] = [
        (
            "tolerances 1e300",
            dict(base, tolerances={k: {"rtol": 1e300, "atol": 1e300} for k in base["tolerances"]}),
            "looser",
        ),
        (
            "float64 rtol ×10",
            dict(base, tolerances={"float64": {"rtol": 1e-6, "atol": 1e-9}}),
            "looser",
        ),
        ("rtol None", dict(base, tolerances={"float64": {"rtol": None, "atol": 1e-9}}), "number"),
        (
            "rtol NaN",
            dict(base, tolerances={"float64": {"rtol": float("nan"), "atol": 1e-9}}),
            "number",
        ),
        ("tolerance for int8", dict(base, tolerances={"int8": {"rtol": 0, "atol": 0}}), "unknown"),
        ("23 of 24 cases deleted", dict(base, cases=base["cases"][:1]), "missing"),
        ("one case deleted", dict(base, cases=base["cases"][1:]), "missing"),
        ("a case listed twice", dict(base, cases=[c0, *base["cases"]]), "twice"),
        ("an unknown case", case(id="linear-weird"), "not in the schema"),
        ("cases a string", dict(base, cases="all"), "'cases'"),
        ("a case a list", dict(base, cases=[[1], *base["cases"][1:]]), "object"),
        ("file outside cases/", case(file="cases/../../etc/passwd"), "bad file entry"),
        ("file of another case", case(file=base["cases"][1]["file"]), "bad file entry"),
        ("sha256 a number", case(sha256=5), "sha256"),
        ("schedule swapped", case(schedule="cosine"), "schedule"),
        ("schedule params changed", case(schedule_params={"p": 3.0}), "params"),
        ("data missing", case(data=None), "'data'"),
        ("weights a string", case(data=dict(c0["data"], weights="x")), "invalid mixture"),
        ("weights negative", case(data=dict(c0["data"], weights=[-1, 1, 1])), "invalid mixture"),
        ("means of a wrong shape", case(data=dict(c0["data"], means=[[0.0]])), "invalid mixture"),
        ("n a string", case(n="4"), "'n'"),
        ("n too large", case(n=c0["n"] + 1), "shape"),
        ("schema_version 99", dict(base, schema_version=99), "schema_version"),
        ("schema other", dict(base, schema="x"), "schema"),
        ("manifest a list", [base], "schema"),
    ]
    for label, m, pattern in tamperings:
        _set_manifest(root, m)
        msg = _verify_refused(root, capsys)
        assert pattern in msg, (label, msg)
    for label, text in (
        ("not JSON", "{oops"),
        ("JSON nested 100000 deep", "[" * 100_000 + "]" * 100_000),
        ("not UTF-8", "\udcff"),
    ):
        (root / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        _verify_refused(root, capsys)
        tamperings.append((label, None, ""))
    report(capsys, f"manifest: {len(tamperings)} tamperings refused; fmref verify exit 2 for each")


def test_all_nan_or_non_finite_case_data_is_refused_even_with_matching_hashes(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmref.testing._npzio import npz_bytes

    base = _manifest(suite)
    tried = 0
    for label, change, pattern in (
        ("all-NaN score", lambda a: a.update(score=np.full_like(a["score"], np.nan)), "every row"),
        ("NaN in an input", lambda a: a["x"].__setitem__((0, 0), np.nan), "finite"),
        ("an extra array", lambda a: a.update(extra=np.zeros(2)), "does not know"),
        ("an array dropped", lambda a: a.pop("posterior_mean"), "lacks"),
        ("a wrong shape", lambda a: a.update(score=a["score"][:, :1]), "shape"),
    ):
        root = _copy(suite, tmp_path / f"s{tried}")
        c0 = base["cases"][0]
        arrays = dict(np.load(root / c0["file"]))
        change(arrays)
        blob = npz_bytes(arrays)
        (root / c0["file"]).write_bytes(blob)
        m = json.loads(json.dumps(base))
        m["cases"][0]["sha256"] = sha256(blob)  # the attacker rewrites the hash too
        _set_manifest(root, m)
        assert pattern in _verify_refused(root, capsys), label
        tried += 1
    report(capsys, f"case data: {tried} rewrites with matching hashes refused by the schema")


def test_an_all_zero_implementation_cannot_pass(suite: Path) -> None:
    rep = verify_suite(suite, _zero)
    assert not rep.passed and rep.count("fail") > 100


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero (POSIX)")
def test_suite_files_that_are_special_or_oversized(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tried = []
    for which in ("manifest.json", "cases/linear-full.npz"):
        where = tmp_path / which.replace("/", "_")
        where.mkdir()
        for label, (path, _, pattern) in _special_files(where).items():
            root = _copy(suite, tmp_path / f"s{len(tried)}")
            (root / which).unlink()
            if label != "nothing":
                (root / which).symlink_to(path)
            msg = _verify_refused(root, capsys)
            if label == "nothing":
                pattern = "holds no manifest|listed in the manifest is missing"
            assert re.search(pattern, msg), (which, label, msg)
            tried.append(f"{which} {label}")
        root = _copy(suite, tmp_path / f"s{len(tried)}")
        with open(root / which, "r+b") as f:
            f.truncate(8 * 2**30)  # 8 GiB, sparse: costs no disk
        msg, peak = _peak_mib(lambda r=root: _verify_refused(r, capsys))
        assert "more than the limit" in msg and peak < 64, (which, peak)
        tried.append(f"{which} 8 GiB sparse (peak {peak:.1f} MiB)")
    report(capsys, f"suite files: {len(tried)} special or oversized, refused without hanging")


def test_concurrent_and_racing_suite_writers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = vmod._manifest
    # Two writers without overwrite, both past the early check before either installs.
    barrier = threading.Barrier(2)

    def synced(*a: Any) -> Any:
        out = real(*a)
        barrier.wait(HANG)
        return out

    monkeypatch.setattr(vmod, "_manifest", synced)
    out = tmp_path / "both"
    results: list[str] = []

    def run(seed: int) -> None:
        try:
            write_suite(out, seed=seed, per_time=1)
            results.append("ok")
        except ValueError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(HANG)
    assert sorted(results)[0] == "ok" and "already exists" in sorted(results)[1], results
    assert load_suite(out).manifest["seed"] in (1, 2)
    # Both with overwrite: both succeed, the suite is whole.
    results.clear()

    def run_force(seed: int) -> None:
        write_suite(out, seed=seed, per_time=1, overwrite=True)
        results.append("ok")

    threads = [threading.Thread(target=run_force, args=(s,)) for s in (3, 4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(HANG)
    assert results == ["ok", "ok"] and load_suite(out).manifest["seed"] in (3, 4)
    # A user creates a folder at out while fmref computes: it is never replaced.
    for overwrite in (False, True):
        target = tmp_path / f"user{overwrite}"

        def user_meanwhile(*a: Any, t: Path = target) -> Any:
            res = real(*a)
            t.mkdir()
            (t / "thesis.tex").write_text("years of work")
            return res

        monkeypatch.setattr(vmod, "_manifest", user_meanwhile)
        with pytest.raises(ValueError, match=r"already exists|not a vector suite"):
            write_suite(target, per_time=1, overwrite=overwrite)
        assert (target / "thesis.tex").read_text() == "years of work"
    # --force refuses a suite folder holding anything fmref did not write.
    monkeypatch.setattr(vmod, "_manifest", real)
    mine = tmp_path / "mine"
    write_suite(mine, per_time=1)
    (mine / "notes.md").write_text("mine")
    with pytest.raises(ValueError, match="not a vector suite"):
        write_suite(mine, per_time=1, overwrite=True)
    assert (mine / "notes.md").exists()
    (mine / "notes.md").unlink()
    (mine / "cases" / "extra.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a vector suite"):
        write_suite(mine, per_time=1, overwrite=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["both", "mine", "userFalse", "userTrue"]  # no temporaries left
    report(capsys, "suite writers: 2 racing (one wins), 2 forcing, user folders never replaced")


_SUITE_WRITER = """
import sys, time
from pathlib import Path
from fmref import _files
real = _files._install
def slow(*a, **k):
    print("ready", flush=True)
    time.sleep(600)
_files._install = slow
from fmref.testing import write_suite
write_suite(Path(sys.argv[1]), per_time=1)
"""


def test_cli_processes_racing_and_a_killed_suite_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "D"
    cmd = [sys.executable, "-m", "fmref", "vectors", "--out", str(out), "--per-time", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    codes = sorted(p.wait(timeout=120) for p in procs)
    errs = b"".join(p.stderr.read() for p in procs if p.stderr is not None).decode()
    assert codes == [0, 1] and "already exists" in errs, (codes, errs)
    load_suite(out)
    killed = tmp_path / "K"
    proc = _spawn(_SUITE_WRITER, str(killed))
    _kill_when_ready(proc)
    assert not killed.exists()
    left = stale_temporaries(killed)
    assert len(left) == 1 and (left[0] / "manifest.json").exists()
    write_suite(killed, per_time=1)
    assert not left[0].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["D", "K"]
    report(capsys, "2 `fmref vectors` processes: one wins; SIGKILLed writer: temp dir cleaned")


def test_fmref_own_suite_still_verifies(suite: Path) -> None:
    def impl(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        if q == "target":
            return None
        mp = MarginalPath(
            GaussianMixture(case["weights"], case["means"], case["covs"]),
            SCHEDULES[case["schedule"]](**case["schedule_params"]),
        )
        return mp.evaluate(inputs["x"], inputs["t"], (q,))[q]

    assert verify_suite(suite, impl).passed
