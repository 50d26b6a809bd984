"""Imports point downward only (DESIGN.md §4): the math layer never imports runtimes or shells."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ilora"

MATH_MODULES = sorted(
    [
        *(PKG / "algorithms").rglob("*.py"),
        *(PKG / "lora").rglob("*.py"),
        PKG / "tensors.py",
        PKG / "data" / "partition.py",
        PKG / "data" / "partitioners.py",
        PKG / "types.py",
        PKG / "registry.py",
        PKG / "seeding.py",
    ]
)
MATH_FORBIDDEN = (
    "flwr",
    "typer",
    "datasets",
    "matplotlib",
    "rich",
    "ilora.engine",
    "ilora.cli",
    "ilora.bench",
)
REPORT = PKG / "bench" / "report.py"
REPORT_FORBIDDEN = ("torch", "ilora.engine", "ilora.algorithms")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Yield every module an ``import`` anywhere in ``source`` may load, relative ones resolved.

    ``from a.b import c`` yields ``a.b`` and ``a.b.c`` (``c`` may be a submodule).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            yield stem
            yield from (f"{stem}.{alias.name}" for alias in node.names)


def forbidden_imports(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    names = imported_names(path.read_text(), _module_name(path), path.name == "__init__.py")
    return sorted({n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)})


def test_math_module_list_is_complete() -> None:
    assert all(p.is_file() for p in MATH_MODULES)
    names = {_module_name(p) for p in MATH_MODULES}
    assert {"ilora.algorithms", "ilora.algorithms.base", "ilora.lora", "ilora.tensors"} <= names
    assert {"ilora.data.partition", "ilora.types", "ilora.registry", "ilora.seeding"} <= names


@pytest.mark.parametrize("path", MATH_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_math_layer_imports_no_runtime_or_shell(path: Path) -> None:
    bad = forbidden_imports(path, MATH_FORBIDDEN)
    assert not bad, f"{path.relative_to(SRC)} imports {bad} (DESIGN.md §4 layering)"


def test_report_imports_no_training_code() -> None:
    bad = forbidden_imports(REPORT, REPORT_FORBIDDEN)
    assert not bad, f"bench/report.py imports {bad}; it must only read run directories"


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("import flwr.common\n", "ilora.lora.x", "flwr.common"),
        ("def f():\n    import typer\n", "ilora.lora.x", "typer"),
        ("from ilora import engine\n", "ilora.lora.x", "ilora.engine"),
        ("from ..engine import local\n", "ilora.lora.x", "ilora.engine.local"),
        ("from ..bench.plots import f\n", "ilora.algorithms.x", "ilora.bench.plots"),
        ("from . import cli\n", "ilora.x", "ilora.cli"),
    ],
)
def test_checker_sees_every_import_form(source: str, module: str, found: str) -> None:
    assert found in set(imported_names(source, module))


def test_checker_ignores_lookalike_names() -> None:
    names = set(imported_names("import richtext\nimport torchvision_x\n", "ilora.x"))
    assert not any(n == f or n.startswith(f + ".") for n in names for f in MATH_FORBIDDEN)
    assert not any(n == f or n.startswith(f + ".") for n in names for f in REPORT_FORBIDDEN)


CORE_MODULES = sorted(p for p in PKG.rglob("*.py") if "flower" not in p.relative_to(PKG).parts)


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_flower_package_imports_flwr(path: Path) -> None:
    bad = forbidden_imports(path, ("flwr", "ilora.flower"))
    if path == PKG / "cli_flower.py":  # `ilora flower ...` imports it inside its commands only
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        bad = [n for n in bad if any(n in ast.unparse(t) for t in top)]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}; core must run without flwr"


def test_core_runs_without_flwr_loaded() -> None:
    code = (
        "import sys, ilora.cli, ilora.engine.simulation, ilora.engine.setup\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'flwr'], 'flwr imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
