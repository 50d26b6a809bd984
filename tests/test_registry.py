import colorsys

import pytest

from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import create_algorithm
from ilora.algorithms.base import hyperparameter_help
from ilora.registry import Registry
from ilora.registry import UnknownNameError


def test_duplicate_name_raises() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("a")(object())
    with pytest.raises(ValueError, match="already a widget called 'a'"):
        reg.register("a")(object())


def test_a_module_registering_a_lazy_name_must_be_the_object_the_table_names() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register_lazy("dup", "ilora.registry:Registry")
    reg.register("dup", preset={"x": 1})(Registry)  # the module's own decorator: accepted
    assert reg.get("dup") is Registry and reg.preset("dup") == {"x": 1}
    reg.register_lazy("other", "ilora.registry:Registry")
    with pytest.raises(ValueError, match="fix the name table"):
        reg.register("other")(UnknownNameError)


def test_a_loaded_lazy_name_stays_listed_and_loadable_when_its_cache_is_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg: Registry[object] = Registry("thing")
    reg.register_lazy("hsv", "colorsys:rgb_to_hsv")
    assert reg.get("hsv") is colorsys.rgb_to_hsv
    monkeypatch.setattr(reg, "_items", {})  # what a test restoring a snapshot of it does
    assert reg.names() == ["hsv"]
    assert reg.get("hsv") is colorsys.rgb_to_hsv


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'fedit'"):
        ALGORITHMS.get("fedlt")


def test_preset_applies_its_defaults_and_args_override() -> None:
    assert create_algorithm("ilora-s").control_variates is True
    assert create_algorithm("ilora").control_variates is False
    assert create_algorithm("ilora-s", {"control_variates": False}).control_variates is False


def test_unknown_hyperparameter_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="did you mean 'redistribute'"):
        create_algorithm("ilora", {"redistrbute": "svd"})


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_hyperparameter_has_help(name: str) -> None:
    helps = hyperparameter_help(ALGORITHMS.get(name))
    assert all(helps.values()), (
        f"{name}: fields without help: {[k for k, v in helps.items() if not v]}"
    )


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_module_has_a_golden_test_file(name: str) -> None:
    from pathlib import Path

    module = ALGORITHMS.get(name).__module__.rsplit(".", 1)[1]
    assert (Path(__file__).parent / "algorithms" / f"test_{module}.py").is_file()
