"""The benchmark runner (``python -m benchmarks`` / ``fmref bench``) on stub modules only.

No benchmark is timed here: stub modules return fixed rows, and the checks are on the files
the runner writes (valid JSON without NaN, Markdown tables, atomic replacement).
"""

from __future__ import annotations

import importlib
import json
import os
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from fmref import _cli_bench, cli

ROOT = Path(__file__).resolve().parent.parent

STUB_OK = """
import numpy as np

def run(quick=False):
    return [
        {"bench": "stub", "n": 12345, "fmref_ms": 1.5, "torch_ms": 3.0, "ratio": 0.5,
         "quick": quick},
        {"bench": "stub", "n": 7, "fmref_ms": np.float64(2.0), "torch_ms": None,
         "ratio": float("nan"), "quick": quick, "note": "a|b"},
    ]
"""
STUB_FAIL = """
def run(quick=False):
    raise RuntimeError("stub exploded")
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    (tmp_path / "fmref_stub_ok.py").write_text(textwrap.dedent(STUB_OK))
    (tmp_path / "fmref_stub_fail.py").write_text(textwrap.dedent(STUB_FAIL))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.__main__")


def _strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_runner_writes_json_and_markdown(runner: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = runner.main(["--quick", "--only", "fmref_stub_ok", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
    report = _strict_json((out / "results.json").read_text())
    assert isinstance(report, dict)
    assert report["environment"]["quick"] is True
    (mod,) = report["modules"]
    assert mod["ok"] is True and mod["module"] == "fmref_stub_ok"
    assert mod["rows"][0] == {
        "bench": "stub",
        "n": 12345,
        "fmref_ms": 1.5,
        "torch_ms": 3.0,
        "ratio": 0.5,
        "quick": True,
    }
    assert mod["rows"][1]["ratio"] is None  # NaN is not JSON: written as null
    assert mod["rows"][1]["fmref_ms"] == 2.0  # NumPy scalar made a plain float
    md = (out / "results.md").read_text()
    assert "## stub" in md
    assert "| n | fmref_ms | torch_ms | ratio | quick | note |" in md
    assert "| 12,345 | 1.500 | 3.000 | 0.500 | yes | – |" in md
    assert "a\\|b" in md  # a pipe inside a cell does not split the table
    assert oct(os.stat(out / "results.json").st_mode & 0o777) == oct(0o644)


def test_runner_records_failures_and_keeps_going(runner: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = runner.main(["--only", "fmref_stub_fail", "fmref_stub_ok", "--out", str(out)])
    assert rc == 1
    report = _strict_json((out / "results.json").read_text())
    assert isinstance(report, dict)
    fail, ok = report["modules"]
    assert fail["ok"] is False and "stub exploded" in fail["error"]
    assert ok["ok"] is True and len(ok["rows"]) == 2
    md = (out / "results.md").read_text()
    assert "## Failures" in md and "stub exploded" in md


def test_write_is_atomic(
    runner: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "atomic"
    folder.mkdir()
    target = folder / "results.json"
    target.write_text("old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(runner.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        runner.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in folder.iterdir()] == ["results.json"]  # no temp file left


def test_discover_lists_bench_modules(runner: ModuleType) -> None:
    names = runner.discover()
    files = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert names == files
    assert "memory" in names


def test_fmref_bench_cli(
    runner: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    rc = cli.main(["bench", "--quick", "--only", "fmref_stub_ok", "--out", str(out)])
    assert rc == 0
    assert _strict_json((out / "results.json").read_text())
    assert cli.main(["bench", "--list"]) == 0
    assert "memory" in capsys.readouterr().out.split()


def test_fmref_bench_outside_a_checkout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_cli_bench, "find_benchmarks", lambda start=None: None)
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert "source repository" in err and "checkout" in err


def test_find_benchmarks_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "benchmarks").mkdir()
    # Without a runner in cwd, the folder beside the (editable) package is the fallback.
    beside = Path(_cli_bench.__file__).resolve().parent.parent / "benchmarks"
    expected = beside if (beside / "__main__.py").is_file() else None
    assert _cli_bench.find_benchmarks(tmp_path) == expected
    (tmp_path / "benchmarks" / "__main__.py").write_text("")
    assert _cli_bench.find_benchmarks(tmp_path) == tmp_path / "benchmarks"


def test_clean_json_values(runner: ModuleType) -> None:
    cleaned = runner._clean({"a": np.float32(0.25), "b": [np.int64(3), float("inf")], "c": (1,)})
    assert cleaned == {"a": 0.25, "b": [3, None], "c": [1]}
