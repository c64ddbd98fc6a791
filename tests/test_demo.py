"""``fmref demo`` end to end on tiny configurations (the real default is measured in the README)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fmref.cli import main
from fmref.cli.demo import _progress_bar, report_lines
from fmref.demo import FIGURES, SINGULAR_T_MAX, run_demo
from fmref.train import Evaluation, StepInfo, load_checkpoint

TINY = "--steps 40 --batch 64 --width 16 --depth 2 --eval-n 2000 --samples 300 --ode-steps 20"
TINY_ARGS = [*TINY.split(), "--no-progress"]
NUMBERS = [
    "cfm_loss",
    "cfm_floor",
    "fm_loss",
    "relative_fm_loss",
    "cfm_loss_stderr",
    "cfm_floor_stderr",
    "fm_loss_stderr",
    "relative_fm_loss_stderr",
    "log_p_data_generated",
    "log_p_data_data",
    "log_p_data_exact_field_ode",
    "energy_distance_generated",
    "energy_distance_exact_field_ode",
    "wall_time_s",
    "wall_time_train_s",
]
KEYS = {*NUMBERS, "config", "model", "data", "schedule", "objective", "evaluations"}


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_demo_no_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["demo", *TINY_ARGS, "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    for row in ("final CFM loss", "L* irreducible floor", "relative FM loss", "wall time"):
        assert row in printed
    s = _summary(out)
    assert set(s) >= KEYS
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "summary.json"]
    for k in NUMBERS:
        assert isinstance(s[k], float) and math.isfinite(s[k]), k
    assert s["objective"] == "linear" and s["config"]["steps"] == 40
    assert f"{s['relative_fm_loss']:.5f}" in printed
    # E L_CFM = L_FM + L* on the final model (common random numbers).
    gap, se = s["cfm_minus_fm_minus_floor"], s["cfm_minus_fm_minus_floor_stderr"]
    assert abs(gap) < 4 * se
    # The exact field's ODE samples reproduce the data's own mean log-likelihood.
    se2 = math.hypot(s["log_p_data_exact_field_ode_stderr"], s["log_p_data_data_stderr"])
    assert abs(s["log_p_data_exact_field_ode"] - s["log_p_data_data"]) < 4 * se2
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck["step"] == 40 and ck["losses"].shape == (40,)


@pytest.mark.slow
def test_demo_with_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (the plot extra)")
    s = run_demo(
        tmp_path, steps=30, batch=32, width=8, depth=1, eval_n=500, samples=200, ode_steps=10
    )
    assert s["figures"] == list(FIGURES)
    for name in FIGURES:
        raw = (tmp_path / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000, name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert _summary(tmp_path)["figures"] == list(FIGURES)


SMALL = dict(steps=10, batch=16, width=8, depth=1, eval_n=200, samples=50, ode_steps=5)


def test_demo_singular_schedule_over_0_1_reports_infinite_floor(tmp_path: Path) -> None:
    s = run_demo(tmp_path, schedule="sqrt_beta", data="random_2d", plots=False, t_max=1.0, **SMALL)
    assert s["objective"] == "cfm"
    assert s["cfm_floor"] is None and "infinite" in s["cfm_floor_warning"]
    assert s["cfm_minus_fm_minus_floor"] is None  # no identity test with an infinite variance
    assert _summary(tmp_path)["cfm_floor"] is None  # strict JSON: no Infinity token
    lines = "\n".join(report_lines(s, tmp_path))
    assert "not tested: L* is infinite" in lines and "±" not in lines.split("CFM − FM − L*")[1][:40]


@pytest.mark.slow
def test_demo_singular_schedule_measures_the_floor_over_0_t_max(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", *TINY_ARGS, "--no-plots", "--out", str(tmp_path), "--schedule", "sqrt_beta"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    s = _summary(tmp_path)
    assert s["t_max"] == SINGULAR_T_MAX and s["cfm_floor_infinite_over_0_1"]
    assert s["cfm_floor"] is not None and s["cfm_floor_warning"] is None
    # E L_CFM = L_FM + L* holds over [0, t_max) for any fixed field: a floor or a loss over
    # another time range would break it.
    gap, se = s["cfm_minus_fm_minus_floor"], s["cfm_minus_fm_minus_floor_stderr"]
    assert abs(gap) < 4 * se
    assert f"L* irreducible floor over [0, {SINGULAR_T_MAX:g}]" in printed
    assert re.search(r"\binf\b", printed) is None and "β̇ infinite at t = 1" in printed


def test_demo_polynomial_p_sets_the_schedule(tmp_path: Path) -> None:
    s = run_demo(tmp_path, schedule="polynomial", polynomial_p=1.5, plots=False, **SMALL)
    assert s["schedule"] == "Polynomial(p=1.5)" and s["t_max"] == 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(schedule="linear", polynomial_p=2.0), "only to --schedule polynomial"),
        (dict(schedule="polynomial", polynomial_p=0.5), "must be a finite number >= 1"),
        (dict(t_max=0.0), "--t-max must be a number in"),
        (dict(t_max=1.5), "--t-max must be a number in"),
    ],
)
def test_demo_rejects_bad_schedule_options(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_demo(tmp_path / "o", plots=False, **options)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_demo_without_matplotlib_fails_before_training(tmp_path: Path) -> None:
    # A fresh interpreter in which importing matplotlib fails, as on a bare install.
    out = tmp_path / "o"
    code = (
        "import sys; sys.modules['matplotlib'] = None; from fmref.cli import main; "
        f"sys.exit(main({['demo', *TINY_ARGS, '--out', str(out)]!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 1
    assert 'pip install "fmref[demo]"' in done.stderr and "--no-plots" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing trained, nothing written


def test_progress_bar_shows_no_nan_and_no_infinite_floor() -> None:
    pytest.importorskip("tqdm", reason="tqdm not installed (the demo extra)")
    update, bar = _progress_bar(300, True)
    assert update is not None
    ev = Evaluation(200, 1.0, 0.1, 0.25, 0.01)
    update(StepInfo(100, 300, 12.0, math.inf, None))
    assert "nan" not in bar.postfix and "floor" not in bar.postfix and "rel_fm" not in bar.postfix
    update(StepInfo(200, 300, 11.0, 9.5, ev))
    assert "rel_fm=0.2500" in bar.postfix and "floor=9.500" in bar.postfix
    bar.close()


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--steps", "0"), ("--batch", "0"), ("--width", "0"), ("--lr", "-0.1"), ("--depth", "0")],
)
def test_demo_rejects_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-progress", flag, value]) == 1
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_run_demo_rejects_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown"):
        run_demo(tmp_path, stepz=3)


@pytest.mark.slow
def test_python_m_fmref_demo(tmp_path: Path) -> None:
    out = tmp_path / "m"
    cmd = [
        sys.executable,
        "-m",
        "fmref",
        "demo",
        *TINY_ARGS,
        "--steps",
        "5",
        "--no-plots",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert np.isfinite(_summary(out)["relative_fm_loss"])


# ---- fmref demo --guidance ---------------------------------------------------------------------
GUIDED = [
    "--guidance", "--steps", "30", "--batch", "64", "--width", "16", "--depth", "1",
    "--eval-n", "1000", "--samples", "100", "--ode-steps", "10", "--guidance-weights", "1", "3",
    "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_guidance_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (the plot extra)")
    out = tmp_path / "g"
    assert main(["demo", *GUIDED, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    s = _summary(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz",
        "guidance.png",
        "summary.json",
    ]
    raw = (out / "guidance.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
    assert s["data"] == "eight_gaussians_classes(2)" and s["config"]["p_uncond"] == 0.2
    assert s["model"]["n_classes"] == 2 and s["model"]["embedding_dim"] == 8
    ck = load_checkpoint(out / "checkpoint.npz")
    assert ck["step"] == 30 and ck["model_config"]["n_classes"] == 2
    # One row per class and one for the null label; each satisfies E L_CFM = L_FM + L*
    # (common random numbers), a check of the yardsticks that holds for any field.
    assert [r["label"] for r in s["classes"]] == [0, 1] and s["unconditional"]["label"] is None
    for r in [*s["classes"], s["unconditional"]]:
        for k in ("fm_loss", "relative_fm_loss", "cfm_floor", "cfm_loss"):
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, k
        assert abs(r["cfm_minus_fm_minus_floor"]) < 4 * r["cfm_minus_fm_minus_floor_stderr"]
    # The exact CFG facts: w = 1 samples p_data(· | y) (KL 0), w = 3 does not sample q^w_1.
    w1, w3 = s["cfg"]
    assert (w1["w"], w3["w"]) == (1.0, 3.0)
    assert abs(w1["kl_exact"]) < 1e-5
    assert w3["kl_exact"] > 4 * w3["kl_exact_stderr"] > 0
    for r in s["cfg"]:
        for key in ("exact", "learned"):
            assert sum(r[key]["mode_freq"]) == pytest.approx(1.0, rel=0, abs=1e-12)
            assert 0 <= r[key]["in_class"] <= 1
        assert math.isfinite(r["kl_learned"]) and math.isfinite(r["relative_fm_loss"])
        assert r["flow_map_error"] > 0
    for row in ("∅", "y = 0", "y = 1", "w = 1:", "w = 3:", "learned", "exact", "wrote"):
        assert row in printed, row
    assert f"{s['unconditional']['relative_fm_loss']:.5f}" in printed


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--guidance", "--data", "eight_gaussians"], "--data"),
        (["--guidance", "--p-uncond", "1.5"], "--p-uncond"),
        (["--guidance", "--classes", "3"], "--classes"),
        (["--guidance", "--guidance-class", "2"], "--guidance-class"),
        (["--guidance", "--guidance-weights", "1", "-2"], "--guidance-weights"),
        (["--guidance", "--samples", "1"], "--samples"),
        (["--p-uncond", "0.1"], "--p-uncond"),
        (["--guidance-weights", "2"], "--guidance-weights"),
    ],
)
def test_guidance_demo_rejects_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    assert main(["demo", "--out", str(tmp_path), "--no-progress", *args]) == 1
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_run_demo_guidance_rejects_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown guidance demo options"):
        run_demo(tmp_path, guidance=True, data="eight_gaussians")
