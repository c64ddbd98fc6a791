"""The benchmark runner (``python -m benchmarks``) on stub modules only, and fmref standing alone.

No benchmark is timed here: stub modules return fixed rows, and the checks are on the files
the runner writes (valid JSON without NaN, Markdown tables, atomic replacement) and on where
it writes them (never the tracked figures unless asked).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import fmref
from fmref import cli

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


def _captured_out(runner: ModuleType, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Path:
    seen: list[Path] = []

    def fake_run_suite(quick: bool, out: object, only: object) -> int:
        seen.append(Path(str(out)))
        return 0

    monkeypatch.setattr(runner, "run_suite", fake_run_suite)
    assert runner.main(argv) == 0
    (out,) = seen
    return out


def test_default_output_is_not_the_tracked_results(
    runner: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _captured_out(runner, monkeypatch, ["--quick"])
    assert out == runner.DEFAULT_OUT
    assert out.resolve() != (ROOT / "benchmarks" / "results").resolve()
    assert (
        _captured_out(runner, monkeypatch, ["--write-results"]) == ROOT / "benchmarks" / "results"
    )
    assert _captured_out(runner, monkeypatch, ["--out", "x"]) == Path("x")


def test_out_and_write_results_exclude_each_other(
    runner: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.main(["--out", "x", "--write-results"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_default_output_folder_is_ignored_by_git(runner: ModuleType) -> None:
    probe = runner.DEFAULT_OUT / "results.json"
    done = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=ROOT, capture_output=True, check=False
    )
    assert done.returncode == 0, f"{probe} is not ignored by git"


def test_fmref_has_no_bench_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quick"])
    assert exc.value.code == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def _imported_names(tree: ast.AST) -> list[str]:
    """Absolute imports, and the literal argument of every ``import_module(...)`` call."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "__import__"}:
                names.append(str(node.args[0].value))
    return names


def test_fmref_never_imports_benchmarks_or_tests() -> None:
    # The package must work installed, where neither folder exists.
    package = Path(fmref.__file__).resolve().parent
    offenders = [
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py"))
        for name in _imported_names(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] in {"benchmarks", "tests"}
    ]
    assert offenders == []
    # The scan can fail: it finds the runner's own import of fmref's package.
    runner_tree = ast.parse((ROOT / "benchmarks" / "__main__.py").read_text(encoding="utf-8"))
    assert any(n.startswith("fmref") for n in _imported_names(runner_tree))


def test_clean_json_values(runner: ModuleType) -> None:
    cleaned = runner._clean({"a": np.float32(0.25), "b": [np.int64(3), float("inf")], "c": (1,)})
    assert cleaned == {"a": 0.25, "b": [3, None], "c": [1]}
