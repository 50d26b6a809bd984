"""Lazy registry entries: names are known at once, modules are imported on the first lookup."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from ilora.registry import Registry
from ilora.registry import UnknownNameError

HEAVY = ("transformers", "ilora.models.encoder", "ilora.tasks.text_common", "ilora.tasks.tiny")


def _fresh_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_lazy_entry_is_imported_on_first_get_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_module(monkeypatch, "colorsys")
    reg: Registry[object] = Registry("widget")
    reg.register_lazy("hsv", "colorsys:rgb_to_hsv")
    assert "hsv" in reg and reg.names() == ["hsv"]
    assert "colorsys" not in sys.modules
    got = reg.get("hsv")
    assert got is importlib.import_module("colorsys").rgb_to_hsv
    assert reg.get("hsv") is got and reg.preset("hsv") == {}


def test_lazy_class_gets_its_registered_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_module(monkeypatch, "fractions")
    reg: Registry[type] = Registry("widget")
    reg.register_lazy("ratio", "fractions:Fraction")
    cls = reg.get("ratio")
    assert cls is importlib.import_module("fractions").Fraction
    assert cls.name == "ratio"  # type: ignore[attr-defined]
    del cls.name  # type: ignore[attr-defined]  # leave the stdlib class as it was


def test_a_lazy_name_cannot_be_defined_twice() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register_lazy("a", "colorsys:rgb_to_hsv")
    with pytest.raises(ValueError, match="registered as 'colorsys:rgb_to_hsv'"):
        reg.register("a")(object())  # only the object the table names may register it
    with pytest.raises(ValueError, match="already a widget called 'a'"):
        reg.register_lazy("a", "colorsys:hsv_to_rgb")
    with pytest.raises(ValueError, match="not 'module:attr'"):
        reg.register_lazy("b", "colorsys")


def test_unknown_name_lists_lazy_names_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_module(monkeypatch, "colorsys")
    reg: Registry[object] = Registry("widget")
    reg.register("plain")(object())
    reg.register_lazy("hsv", "colorsys:rgb_to_hsv")
    with pytest.raises(UnknownNameError, match=r"did you mean 'hsv'.*known: hsv, plain"):
        reg.get("hsb")
    assert "colorsys" not in sys.modules


def test_entry_points_import_no_task_module_but_know_every_task() -> None:
    code = (
        "import json, sys\n"
        "import ilora.flower.client, ilora.cli\n"
        "from ilora.tasks.base import TASKS\n"
        "mods = sorted(m for m in sys.modules if m.startswith(('transformers', 'ilora.')))\n"
        "print(json.dumps({'modules': mods, 'names': TASKS.names()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    seen = json.loads(out.stdout.splitlines()[-1])
    assert [m for m in seen["modules"] if m.startswith(HEAVY)] == []
    tasks = [m for m in seen["modules"] if m.startswith("ilora.tasks.")]
    assert tasks == ["ilora.tasks.base", "ilora.tasks.catalog"]
    expected = sorted(
        ["fashion-mnist", "healthnews", "image-npz", "rotten-tomatoes", "text-csv"]
        + ["tiny-image", "tiny-text"]
    )
    assert seen["names"] == expected
