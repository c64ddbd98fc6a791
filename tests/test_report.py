"""fmref.report: the exact field gets a clean verdict; each planted fault gets its named finding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fmref import GaussianMixture, Linear, MarginalPath, eight_gaussians, report
from fmref.report import Report

DATA = eight_gaussians()
MP = MarginalPath(DATA, Linear())
# Small but sufficient sizes: each check's noise is measured, so the verdict must stay clean.
SMALL: dict[str, Any] = {
    "n": 1024,
    "n_samples": 1000,
    "n_kl": 100,
    "steps": 40,
    "energy_repeats": 8,
}


def _checks(rep: Report) -> set[str]:
    return {f.check for f in rep.findings}


def test_exact_field_gets_a_clean_verdict_and_files(tmp_path: Path) -> None:
    stages: list[tuple[str, int, int]] = []
    rep = report(
        MP.vector_field,
        MP,
        name="exact",
        out=tmp_path,
        progress=lambda *a: stages.append(a),
        **SMALL,
    )
    assert rep.clean, rep.verdict
    assert rep.verdict.startswith("no discrepancy detected at these sample sizes")
    assert rep.fm.relative == 0.0 and rep.scale == pytest.approx(1.0, rel=0, abs=1e-12)
    assert rep.kl_method == "exact divergence"
    assert abs(rep.kl) < 1e-3  # the likelihood ODE of the exact field recovers log p_data
    # L* and the identity: the floor in the libraries' scale is L*/d.
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["cfm_floor_per_coordinate"] == pytest.approx(rep.floor.value / 2, rel=1e-12)
    assert abs(rep.identity) < 4 * rep.identity_stderr
    assert doc["verdict"] == rep.verdict and doc["findings"] == []
    md = (tmp_path / "report.md").read_text()
    assert "**Verdict:** no discrepancy" in md and "| 7 |" in md
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            "report.json",
            "report.md",
            "report_coverage.png",
            "report_fields.png",
            "report_profile.png",
            "report_samples.png",
        ]
    )  # and no temporary files left behind
    assert [s[0] for s in stages][-1] == "done" and stages[-1][1] == stages[-1][2]
    assert [s[1] for s in stages] == sorted(s[1] for s in stages)


def test_drifting_mode_weights_are_named() -> None:
    # The exact field of the same modes with component 3's weight cut from 1/8 to 1/20.
    w = DATA.weights.copy()
    w[3] = 0.05
    w /= w.sum()
    drifted = MarginalPath(GaussianMixture(w, DATA.means, DATA.covs), Linear())

    def field(x: Any, t: Any) -> Any:
        return drifted.vector_field(x, t)

    rep = report(field, MP, **SMALL)
    assert "mode_weights" in _checks(rep)
    msg = next(f.message for f in rep.findings if f.check == "mode_weights")
    assert msg.startswith("mode weights drift: component 3 at 0.05")
    assert "expected 0.12" in msg  # the exact samples' share, 1/8 up to its MC error
    assert rep.kl_method == "hutchinson"  # a plain function has no divergence method
    assert "scale" not in _checks(rep) and "sign" not in _checks(rep)
    assert "mode weights drift: component 3" in rep.verdict


def test_scaled_field_is_named_with_its_factor() -> None:
    rep = report(lambda x, t: 1.2 * MP.vector_field(x, t), MP, **SMALL)
    assert "scale" in _checks(rep)
    msg = next(f.message for f in rep.findings if f.check == "scale")
    assert "u^θ ≈ 1.200 u" in msg
    assert "fm_loss" in _checks(rep)


def test_sign_flipped_field_is_named() -> None:
    rep = report(lambda x, t: -MP.vector_field(x, t), MP, **SMALL)
    assert "sign" in _checks(rep)
    assert "u^θ ≈ -1.000 u" in rep.verdict
    assert {"energy", "log_p_data"} <= _checks(rep)


def test_a_field_that_changes_between_calls_breaks_the_identity() -> None:
    calls = {"n": 0}

    def stateful(x: Any, t: Any) -> Any:
        calls["n"] += 1  # exact on the FM-loss call, zero on the CFM-loss call
        return MP.vector_field(x, t) if calls["n"] != 2 else 0 * x

    rep = report(stateful, MP, **{**SMALL, "n_kl": 0})
    assert "identity" in _checks(rep)
    assert rep.kl is None and rep.kl_method is None


def test_higher_dimension_writes_the_non_planar_figures(tmp_path: Path) -> None:
    from fmref import random_mixture

    mp3 = MarginalPath(random_mixture(3, 3, "diagonal", rng=2), Linear())
    rep = report(mp3.vector_field, mp3, out=tmp_path, **{**SMALL, "n_kl": 30})
    assert rep.clean, rep.verdict
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.json",
        "report.md",
        "report_coverage.png",
        "report_profile.png",
    ]


def test_torch_field_through_like() -> None:
    torch = pytest.importorskip("torch")
    small = {**SMALL, "n": 512, "n_samples": 500, "n_kl": 30, "steps": 20}
    rep = report(MP.vector_field, MP, like=torch.zeros(1, dtype=torch.float64), **small)
    assert rep.clean, rep.verdict


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="field"):
        report("not a field", MP)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="marginal"):
        report(MP.vector_field, DATA)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_samples"):
        report(MP.vector_field, MP, n_samples=1)
    with pytest.raises(TypeError, match="progress"):
        report(MP.vector_field, MP, progress=3)  # type: ignore[arg-type]
