"""Imports point downward only (DESIGN.md §4): every module of ``ilora`` sits in a layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "ilora"

# Every package and top-level module of ilora, by layer; a module may import its own layer and
# the layers below it, never one above (DESIGN.md §4). A new package must be placed here.
LAYERS: dict[str, int] = {
    # 0: math and plain data: pure functions over tensors, names, configs, seeds
    **dict.fromkeys(
        [
            "types",
            "registry",
            "seeding",
            "tensors",
            "assets",
            "config",
            "lora",
            "algorithms",
            "parentdeath",
        ],
        0,
    ),
    "data": 0,
    "models": 1,  # pretrained backbones
    "tasks": 2,  # data, a model and where LoRA goes
    "engine": 3,  # the embedded round loop
    # 4: what runs or reads the engine: Flower runtime, measurements, renderers, library API
    **dict.fromkeys(["flower", "bench", "report", "api", "export", "describe"], 4),
    # 5: shells
    **dict.fromkeys(
        [
            "cli",
            "cli_bench",
            "cli_campaigns",
            "cli_common",
            "cli_export",
            "cli_flower",
            "cli_options",
            "cli_progress",
            "cli_protocol",
            "cli_report",
            "cli_runs",
            "__main__",
            "__init__",
        ],
        5,
    ),
}
ALL_MODULES = sorted(PKG.rglob("*.py"))
MATH_FORBIDDEN = ("flwr", "typer", "datasets", "matplotlib", "rich")
REPORT_MODULES = sorted((PKG / "report").rglob("*.py"))
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


def layer_unit(module: str) -> str:
    """Return the package or top-level module of ``ilora`` that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Return what ``source`` (of ``module``) imports from a higher layer or from no layer.

    The bare name ``ilora`` is skipped: importing any submodule imports the package root.
    """
    own = LAYERS[layer_unit(module)]
    names = {n for n in imported_names(source, module, is_package) if n.startswith("ilora.")}
    return sorted(n for n in names if LAYERS.get(layer_unit(n), own + 1) > own)


MATH_MODULES = [p for p in ALL_MODULES if LAYERS.get(layer_unit(_module_name(p))) == 0]


def forbidden_imports(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    names = imported_names(path.read_text(), _module_name(path), path.name == "__init__.py")
    return sorted({n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)})


def test_every_package_and_module_has_a_layer() -> None:
    units = {layer_unit(_module_name(p)) for p in ALL_MODULES}
    assert units == set(LAYERS), f"place {sorted(units - set(LAYERS))} in LAYERS"
    names = {_module_name(p) for p in MATH_MODULES}
    assert {"ilora.algorithms.base", "ilora.lora.keys", "ilora.data.partition"} <= names


@pytest.mark.parametrize("path", ALL_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_higher_layer(path: Path) -> None:
    module = _module_name(path)
    bad = upward_imports(path.read_text(), module, path.name == "__init__.py")
    layer = LAYERS[layer_unit(module)]
    assert not bad, f"{path.relative_to(SRC)} (layer {layer}) imports {bad} from above"


@pytest.mark.parametrize(
    ("source", "module", "upward"),
    [
        ("from ilora.engine import run\n", "ilora.models.x", ["ilora.engine", "ilora.engine.run"]),
        ("def f():\n    import ilora.tasks.base\n", "ilora.models.x", ["ilora.tasks.base"]),
        ("from ilora import cli\n", "ilora.engine.x", ["ilora.cli"]),
        ("from ilora import run\n", "ilora.engine.x", ["ilora.run"]),  # in no layer
        ("from ..report import comm\n", "ilora.engine.x", ["ilora.report", "ilora.report.comm"]),
        ("from ilora.lora import keys\n", "ilora.report.x", []),
        ("from ilora.bench import comm\n", "ilora.report.x", []),  # the same layer
    ],
)
def test_the_layer_check_sees_upward_and_unplaced_imports(
    source: str, module: str, upward: list[str]
) -> None:
    assert upward_imports(source, module) == upward


@pytest.mark.parametrize("path", MATH_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_math_layer_imports_no_runtime_or_shell(path: Path) -> None:
    bad = forbidden_imports(path, MATH_FORBIDDEN)
    assert not bad, f"{path.relative_to(SRC)} imports {bad} (DESIGN.md §4 layering)"


@pytest.mark.parametrize("path", REPORT_MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_report_imports_no_training_code(path: Path) -> None:
    bad = forbidden_imports(path, REPORT_FORBIDDEN)
    assert not bad, f"{path.relative_to(SRC)} imports {bad}; it must only read result files"


@pytest.mark.parametrize(
    ("source", "module", "found"),
    [
        ("import flwr.common\n", "ilora.lora.x", "flwr.common"),
        ("def f():\n    import typer\n", "ilora.lora.x", "typer"),
        ("from ilora import engine\n", "ilora.lora.x", "ilora.engine"),
        ("from ..engine import local\n", "ilora.lora.x", "ilora.engine.local"),
        ("from ..bench.comm import f\n", "ilora.algorithms.x", "ilora.bench.comm"),
        ("from . import cli\n", "ilora.x", "ilora.cli"),
    ],
)
def test_checker_sees_every_import_form(source: str, module: str, found: str) -> None:
    assert found in set(imported_names(source, module))


def test_checker_ignores_lookalike_names() -> None:
    names = set(imported_names("import richtext\nimport torchvision_x\n", "ilora.x"))
    assert not any(n == f or n.startswith(f + ".") for n in names for f in MATH_FORBIDDEN)
    assert not any(n == f or n.startswith(f + ".") for n in names for f in REPORT_FORBIDDEN)


# the Flower runtime and the measurements of it (``ilora bench flower``) may import flwr
FLOWER_PACKAGES = (PKG / "flower", PKG / "bench" / "flower")
CORE_MODULES = sorted(
    p for p in PKG.rglob("*.py") if not any(p.is_relative_to(d) for d in FLOWER_PACKAGES)
)


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
