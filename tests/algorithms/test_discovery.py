"""Adding an algorithm is one file: a new module in the package is found, registered and checked.

Each test writes a throwaway algorithm module into a temporary folder added to the package's
``__path__`` (the folder stands in for ``src/ilora/algorithms/``) and runs the package's own
discovery on it; the registries and ``sys.modules`` are restored afterwards.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import test_contract as contract

import ilora.algorithms
from conftest import TinySetup
from ilora.algorithms import traffic
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import create_algorithm
from ilora.engine.robust import mean_algorithms

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ilora.algorithms.__name__

THROWAWAY = '''"""Throwaway: FedAvg of A, B and the head at one rank, written by a test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ilora.algorithms import traffic
from ilora.algorithms._pair_servers import GlobalPairServer
from ilora.algorithms._shared import FactorState
from ilora.algorithms.base import register
from ilora.tensors import weighted_mean
from ilora.types import RoundInfo, Upload


@register("throwaway-avg")
@dataclass(frozen=True)
class ThrowawayAvg(GlobalPairServer):
    """FedAvg of the factors and the head, one rank (init, download, export inherited)."""

    mean_aggregation = True

    def aggregate(
        self, state: FactorState, uploads: Mapping[int, Upload], rnd: RoundInfo
    ) -> FactorState:
        ups = [uploads[c] for c in sorted(uploads)]
        mean = weighted_mean([u.tensors for u in ups], [u.weight for u in ups])
        return replace(state, tensors=mean)
'''
FORMULA = "\ntraffic.formula(ThrowawayAvg)(traffic.pair_both_ways)\n"


@pytest.fixture
def package_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Return a folder on the package's ``__path__``; restore the registries afterwards."""
    monkeypatch.setattr(ilora.algorithms, "__path__", [*ilora.algorithms.__path__, str(tmp_path)])
    monkeypatch.setattr(ALGORITHMS, "_items", dict(ALGORITHMS._items))
    monkeypatch.setattr(ALGORITHMS, "_presets", dict(ALGORITHMS._presets))
    monkeypatch.setattr(traffic, "_FORMULAS", dict(traffic._FORMULAS))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(f"{PACKAGE}."):
            del sys.modules[name]
            delattr(ilora.algorithms, name.rpartition(".")[2])


def _discover() -> list[str]:
    """Run the package's discovery exactly as its ``__init__`` does."""
    return ilora.algorithms.import_modules(PACKAGE, ilora.algorithms.__path__)


def _load_test_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_discovery_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_module_is_registered_and_passes_the_contract(
    package_folder: Path, tiny_setup: TinySetup
) -> None:
    (package_folder / "throwaway_avg.py").write_text(THROWAWAY + FORMULA)
    assert "throwaway_avg" in _discover()
    assert "throwaway-avg" in ALGORITHMS.names()
    alg = create_algorithm("throwaway-avg")
    assert callable(traffic.formula_of(type(alg)))
    assert "throwaway-avg" in mean_algorithms()  # robust aggregation's list follows the flag
    contract_checks = [
        f
        for n, f in vars(contract).items()
        if n.startswith("test_") and "name" in inspect.signature(f).parameters
    ]
    assert len(contract_checks) >= 6
    for check in contract_checks:
        check(name="throwaway-avg", tiny_setup=tiny_setup)
    comm = _load_test_module(ROOT / "tests" / "engine" / "test_communication.py")
    comm.check_measured_bytes_equal_the_formula("throwaway-avg")


def test_the_readme_table_lists_a_new_module(package_folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_tables
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert "throwaway-avg" not in readme_tables.algorithms_table()
    (package_folder / "throwaway_avg.py").write_text(THROWAWAY + FORMULA)
    _discover()
    what = "Throwaway: FedAvg of A, B and the head at one rank, written by a test"
    row = f"| `throwaway-avg` | {what} | no | no |"
    assert row in readme_tables.algorithms_table().splitlines()


def test_a_new_module_without_a_byte_formula_fails_the_communication_check(
    package_folder: Path,
) -> None:
    (package_folder / "throwaway_avg.py").write_text(THROWAWAY)
    _discover()
    comm = _load_test_module(ROOT / "tests" / "engine" / "test_communication.py")
    with pytest.raises(LookupError, match="ThrowawayAvg declares no byte formula"):
        comm.test_every_registered_algorithm_declares_a_formula("throwaway-avg")


def test_underscore_modules_are_helpers_and_not_imported(package_folder: Path) -> None:
    (package_folder / "_throwaway_helper.py").write_text("raise RuntimeError('imported')\n")
    assert "_throwaway_helper" not in _discover()
    assert f"{PACKAGE}._throwaway_helper" not in sys.modules


def test_the_package_lists_every_algorithm_module_it_found() -> None:
    files = {p.stem for p in (ROOT / "src" / "ilora" / "algorithms").glob("[!_]*.py")}
    assert set(ilora.algorithms.__all__) == files
    modules = {ALGORITHMS.get(n).__module__.rpartition(".")[2] for n in ALGORITHMS.names()}
    assert modules == files - {"base", "catalog", "traffic"}  # every other one registers
