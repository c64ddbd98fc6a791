"""fmref.cli: one thin module per subcommand, heavy libraries imported only when one runs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fmref import cli


def test_subcommands_are_the_documented_five() -> None:
    assert list(cli.SUBCOMMANDS) == ["demo", "field", "report", "vectors", "verify"]
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


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for command, shown in (
        ("demo", ["(default 20000; 6000 with --guidance)", "(default eight_gaussians)"]),
        ("report", ["(default: 4096)", "(default: linear)", "(default: fmref-report)"]),
    ):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
        assert all(s in out for s in shown), (command, out)
        assert "(default: None)" not in out and "(default: False)" not in out


# ``fmref report``: fields in a file of the user's, graded on tiny sizes.
FIELDS = textwrap.dedent(
    """
    import numpy as np
    import fmref

    MP = fmref.MarginalPath(fmref.eight_gaussians(), fmref.Linear())

    def exact(x, t):
        return MP.vector_field(x, t)

    def rounding(x, t):  # a relative error of 1e-9: rounding, not a finding
        return MP.vector_field(x, t) * (1 + 1e-9)

    def scaled(x, t):
        return 0.9 * MP.vector_field(x, t)

    def flipped(x, t):
        return -MP.vector_field(x, t)

    def wrong_shape(x, t):
        return MP.vector_field(x, t)[:, :1]

    def nan(x, t):
        return MP.vector_field(x, t) * np.nan

    def raises(x, t):
        raise RuntimeError("boom")

    def fails_later(x, t):  # passes the probe, fails on the first large batch
        if x.shape[0] > 50:
            raise RuntimeError("out of memory")
        return MP.vector_field(x, t)

    NOT_CALLABLE = 3
    """
)
TINY_REPORT = ["--n", "400", "--samples", "200", "--n-kl", "0", "--steps", "20"]
TINY_REPORT += ["--no-figures", "--no-progress"]


@pytest.fixture(scope="module")
def fields(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("impl") / "my_fields.py"
    path.write_text(FIELDS, encoding="utf-8")
    return path


def _report(fields: Path, fn: str, out: Path, *extra: str) -> int:
    return cli.main(["report", "--impl", f"{fields}:{fn}", "--out", str(out), *TINY_REPORT, *extra])


@pytest.mark.slow
@pytest.mark.parametrize("fn", ["exact", "rounding"])
def test_report_of_an_exact_field_exits_0(
    fn: str, fields: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(fields, fn, tmp_path) == 0
    out = capsys.readouterr().out
    assert "verdict: no discrepancy detected" in out and "report.json, report.md" in out
    assert out.startswith(f"fmref report: {fn} against MarginalPath(")  # named by its function
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["findings"] == [] and (tmp_path / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(("fn", "check"), [("scaled", "scale"), ("flipped", "sign")])
def test_report_of_a_wrong_field_exits_1_and_names_the_finding(
    fn: str, check: str, fields: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(fields, fn, tmp_path) == 1
    out = capsys.readouterr().out
    assert f"  - {check}: " in out and "finding(s)" in out
    saved = json.loads((tmp_path / "report.json").read_text())
    assert check in [f["check"] for f in saved["findings"]]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wrong_shape", "must return shape (6, 2)"),
        ("nan", "non-finite"),
        ("raises", "raised RuntimeError: boom"),
        ("NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
        ("no_such_function", "no callable 'no_such_function'"),
    ],
)
def test_report_of_unusable_input_exits_2_without_a_traceback(
    spec: str, message: str, fields: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(fields, spec, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert err.startswith("fmref report: error:") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--impl", "no_such_module_h12:f"], "cannot import 'no_such_module_h12'"),
        (["--impl", "missing.py:f"], "no file missing.py"),
        (["--impl", "nocolon"], "must look like module:function"),
        (["--impl", "x.py:f", "--n", "1"], "--n must be an int >= 2"),
        (["--impl", "x.py:f", "--polynomial-p", "3"], "only to --schedule polynomial"),
    ],
)
def test_report_of_bad_options_exits_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", *argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_report_names_the_stage_where_the_field_failed(
    fields: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _report(fields, "fails_later", tmp_path) == 2
    err = capsys.readouterr().err
    assert "failed during 'losses': RuntimeError: out of memory" in err and "Traceback" not in err


@pytest.mark.slow
def test_report_progress_without_tqdm_is_plain_lines(
    fields: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    argv = [a for a in TINY_REPORT if a != "--no-progress"]
    assert cli.main(["report", "--impl", f"{fields}:exact", "--out", str(tmp_path), *argv]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fmref report: [0/8] losses" and err[-1] == "fmref report: [8/8] done"
    assert len(err) == 9


@pytest.mark.slow
def test_report_with_figures_writes_them(
    fields: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (the demo extra)")
    argv = [a for a in TINY_REPORT if a != "--no-figures"]
    assert cli.main(["report", "--impl", f"{fields}:scaled", "--out", str(tmp_path), *argv]) == 1
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
        "report_coverage.png",
        "report_fields.png",
        "report_profile.png",
        "report_samples.png",
    ]
    out = capsys.readouterr().out
    assert all(name in out for name in pngs)


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
