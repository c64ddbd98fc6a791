"""fmref.cli: one thin module per subcommand, heavy libraries imported only when one runs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fmref import cli


def test_subcommands_are_the_documented_four() -> None:
    assert list(cli.SUBCOMMANDS) == ["demo", "field", "vectors", "verify"]
    for name, (module, _help) in cli.SUBCOMMANDS.items():
        mod = importlib.import_module(module)
        assert module == f"fmref.cli.{name}"
        assert callable(mod.add_arguments) and callable(mod.run)


@pytest.mark.slow
def test_building_the_parser_imports_no_heavy_library() -> None:
    # A fresh interpreter: this process has imported them already.
    heavy = ["matplotlib", "tqdm", "hypothesis", "torch", "dask", "scipy.stats"]
    code = (
        "import sys, json; from fmref import cli; cli.build_parser(); "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout) == []


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS) and "bench" not in out


def test_field_prints_one_row_per_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["field", "--n", "3", "--t", "0.25"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3 and "t = 0.25" in lines[0]


def test_errors_are_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["field", "--n", "0"]) == 1
    assert "fmref field: error:" in capsys.readouterr().err


IMPL = """
import numpy as np
from fmref import GaussianMixture, MarginalPath
from fmref.schedules import SCHEDULES


def impl(quantity, case, inputs):
    if quantity not in ("score", "log_prob"):
        return None
    mp = MarginalPath(GaussianMixture(case["weights"], case["means"], case["covs"]),
                      SCHEDULES[case["schedule"]](**case["schedule_params"]))
    out = mp.evaluate(inputs["x"], inputs["t"], (quantity,))[quantity]
    late = (inputs["t"] > 0.98) & (inputs["t"] < 1)  # a branch wrong only near t = 1
    return np.where(late.reshape(-1, *[1] * (out.ndim - 1)), SCALE * out, out)

SCALE = 1.0
"""


@pytest.mark.slow
def test_verify_prints_failures_only_and_writes_json_and_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite"
    assert cli.main(["vectors", "--out", str(suite), "--per-time", "1"]) == 0
    assert "and 3 labelled cases" in capsys.readouterr().out
    (tmp_path / "good.py").write_text(IMPL)
    (tmp_path / "bad.py").write_text(IMPL.replace("SCALE = 1.0", "SCALE = 1.001"))
    good = ["verify", str(suite), "--impl", f"{tmp_path / 'good.py'}:impl"]
    assert cli.main(good) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1].startswith("PASSED: 48 pass")  # header, rule, verdict
    assert cli.main([*good, "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3 + 24 * 7
    report, junit = tmp_path / "out" / "report.json", tmp_path / "out" / "junit.xml"
    bad = ["verify", str(suite), "--impl", f"{tmp_path / 'bad.py'}:impl", "--quantity", "score"]
    assert cli.main([*bad, "--json", str(report), "--junit", str(junit)]) == 1
    text = capsys.readouterr().out
    assert text.count(" FAIL ") == 24 and " PASS " not in text
    assert "x = [" in text and "failing rows by time: t = 0.99: 2/2, t = 0.999: 2/2" in text
    doc = json.loads(report.read_text())
    assert doc["counts"] == {"pass": 0, "fail": 24, "error": 0, "skip": 0}
    row = doc["rows"][0]
    assert len(row["x"]) == len(row["expected"]) == len(row["actual"]) == 2
    assert row["actual"] == pytest.approx([1.001 * v for v in row["expected"]], rel=1e-12, abs=0)
    root = ET.fromstring(junit.read_text())
    (ts,) = root.findall("testsuite")
    assert ts.get("tests") == "24" and ts.get("failures") == "24"
    assert {tc.get("name") for tc in ts.findall("testcase")} == {"score"}
    # Nothing but the two reports was left in their folder (atomic writes, no temporaries).
    assert sorted(p.name for p in report.parent.iterdir()) == ["junit.xml", "report.json"]
    # A float32 answer to a float64 check fails, saying to ask for float32.
    (tmp_path / "f32.py").write_text(
        IMPL.replace("return np.where", "return np.float32(1) * np.asarray").replace(
            "(late.reshape(-1, *[1] * (out.ndim - 1)), SCALE * out, out)", "(out, np.float32)"
        )
    )
    f32 = ["verify", str(suite), "--impl", f"{tmp_path / 'f32.py'}:impl"]
    assert cli.main(f32) == 1
    assert "--precision float32" in capsys.readouterr().out
    assert cli.main([*f32, "--precision", "float32"]) == 0
