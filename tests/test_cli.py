"""fmref.cli: one thin module per subcommand, heavy libraries imported only when one runs."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

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
