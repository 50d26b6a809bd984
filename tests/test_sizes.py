"""Small files and small functions (DESIGN.md §5): every module of ``ilora`` and ``scripts/``.

A file may hold at most ``MAX_FILE_LINES`` lines besides its module docstring; a function (or
method, nested ones included) at most ``MAX_FUNCTION_LINES`` lines, from its ``def`` line (its
decorators not counted) to its last line, docstring included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SCRIPTS = ROOT / "scripts"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 50

# Known offenders, each "path" (a file) or "path::qualified.name" (a function), relative to
# src/ (scripts: "scripts/<path>"). The list may only shrink: an entry that no longer offends
# fails the test below.
ALLOWED: dict[str, str] = {}


def code_lines(source: str) -> int:
    """Return the number of lines of ``source`` outside its module docstring."""
    tree = ast.parse(source)
    total = len(source.splitlines())
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        total -= (first.end_lineno or first.lineno) - first.lineno + 1
    return total


def function_lengths(source: str) -> Iterator[tuple[str, int]]:
    """Yield ``(qualified name, lines)`` of every function and method in ``source``."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, (child.end_lineno or child.lineno) - child.lineno + 1
                name += "."
            yield from visit(child, name)

    yield from visit(ast.parse(source), "")


def offenders(root: Path = SRC) -> dict[str, int]:
    """Return every file and function of ``root`` over its limit, with its line count."""
    found: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        source, rel = path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()
        if (n := code_lines(source)) > MAX_FILE_LINES:
            found[rel] = n
        for name, n in function_lengths(source):
            if n > MAX_FUNCTION_LINES:
                found[f"{rel}::{name}"] = n
    return found


def all_offenders() -> dict[str, int]:
    """Return the offenders of ``src/`` and ``scripts/`` (those as ``scripts/<path>``)."""
    return {**offenders(), **{f"scripts/{k}": n for k, n in offenders(SCRIPTS).items()}}


@pytest.fixture(scope="module")
def found() -> dict[str, int]:
    """Every offender, parsed once by the worker that runs this module (not at collection)."""
    return all_offenders()


def test_no_file_or_function_over_its_limit(found: dict[str, int]) -> None:
    new = {k: n for k, n in found.items() if k not in ALLOWED}
    assert not new, (
        f"over {MAX_FILE_LINES} lines per file (outside the module docstring) or "
        f"{MAX_FUNCTION_LINES} per function: {new}; split them (move cohesive helpers out)"
    )


def test_the_allow_list_only_shrinks(found: dict[str, int]) -> None:
    fixed = sorted(set(ALLOWED) - set(found))
    assert not fixed, f"no longer over the limit: remove {fixed} from ALLOWED"


def test_the_counts_see_docstrings_methods_and_nested_functions() -> None:
    body = "\n".join(f"    x = {i}" for i in range(60))
    source = (
        '"""Doc\n\nstring."""\n\n'
        f"class K:\n    def big(self):\n{body.replace('    ', '        ')}\n\n"
        f"def outer():\n    def inner():\n{body.replace('    ', '        ')}\n    return inner\n"
    )
    assert code_lines(source) == len(source.splitlines()) - 3
    lengths = dict(function_lengths(source))
    assert lengths["K.big"] == 61
    assert lengths["outer.inner"] == 61
    assert lengths["outer"] == 63


@pytest.mark.parametrize("lines", [MAX_FILE_LINES, MAX_FILE_LINES + 1])
def test_a_file_at_the_limit_passes_and_one_more_line_fails(tmp_path: Path, lines: int) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text('"""A long\ndocstring."""\n' + "x = 1\n" * lines)
    assert ("pkg/m.py" in offenders(tmp_path)) == (lines > MAX_FILE_LINES)


if __name__ == "__main__":  # python tests/test_sizes.py: every offender, allowed ones included
    for key, lines in sorted(all_offenders().items(), key=lambda kv: kv[1]):
        print(f"{lines:4d} {key}{'  (allowed)' if key in ALLOWED else ''}")
