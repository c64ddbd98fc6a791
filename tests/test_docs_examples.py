"""The ```python blocks of README.md, CONTRIBUTING.md and docs/*.md run as written.

Each block runs in a fresh namespace, in a temporary working directory, and every
zero-argument ``test_*`` function it defines is then called, as pytest would. A block whose
imports name a missing optional library skips with that reason. A block preceded by the
comment ``<!-- docs-test: skip REASON -->`` is not run (a signature summary, a fragment that
needs the reader's own code, a sketch at cluster scale); the reason is required and shown.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(?P<reason>\S.*?)\s*-->")
#: Libraries of fmref's optional extras (and of its docs' examples): missing means skip.
OPTIONAL = {
    "torch",
    "dask",
    "distributed",
    "flow_matching",
    "torchdiffeq",
    "matplotlib",
    "tqdm",
    "hypothesis",
    "cupy",
    "jax",
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every fenced block opened by a line that is exactly ```python, with its skip marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        start, j = i, i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        m = SKIP.search(prev)
        blocks.append(
            Block(path, start + 1, "\n".join(lines[start + 1 : j]) + "\n", m and m["reason"])
        )
        i = j + 1
    return blocks


def imported_roots(code: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


BLOCKS = [b for p in DOCS if p.is_file() for b in python_blocks(p)]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_block_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"marked not to run: {block.skip_reason}")
    code = compile(block.code, block.id, "exec")  # a syntax error fails even with libs missing
    for lib in sorted(imported_roots(block.code) & OPTIONAL):
        if importlib.util.find_spec(lib) is None:
            pytest.skip(f"needs {lib} (an optional extra)")
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    exec(code, namespace)
    for name, fn in list(namespace.items()):
        if name.startswith("test_") and callable(fn) and not _parameters(fn):
            fn()


def _parameters(fn: object) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []


def test_the_collector_finds_blocks_and_markers(tmp_path: Path) -> None:
    # The collector can fail: a fixture file with a marked, an unmarked and a non-python block.
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip needs a cluster -->\n"
        "```python\nraise SystemExit\n```\n\n```\nnot python\n```\n\n"
        "The ```` ```python ```` fence, inline.\n",
        encoding="utf-8",
    )
    got = [(b.line, b.code, b.skip_reason) for b in python_blocks(doc)]
    assert got == [(3, "x = 1\n", None), (8, "raise SystemExit\n", "needs a cluster")]
    assert len(BLOCKS) >= 5  # README and docs/ do have examples; an empty scan is a bug
    assert {b.path.name for b in BLOCKS} >= {"README.md", "oracle.md", "scale.md"}


def test_a_block_whose_test_function_fails_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner can fail: the test functions a block defines are called, not just defined.
    bad = Block(ROOT / "README.md", 1, "def test_wrong():\n    assert 1 + 1 == 3\n", None)
    with pytest.raises(AssertionError):
        test_docs_block_runs(bad, tmp_path, monkeypatch)
