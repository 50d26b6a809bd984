"""The report's words follow the code: defaults read from the classes (parsed, not imported)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ilora.algorithms.base import create_algorithm
from ilora.report._code_facts import algorithm_facts
from ilora.report._code_facts import class_facts
from ilora.report._code_facts import sci
from ilora.report._code_facts import task_target
from ilora.report._demo_text import mechanics
from ilora.report._setting import describe
from ilora.report._setting import model_text
from ilora.report._setting import partition_text
from ilora.tasks import TASKS


def test_task_defaults_are_the_dataclass_defaults() -> None:
    for name in ("healthnews", "rotten-tomatoes", "fashion-mnist"):
        cls = TASKS.get(name)
        target = task_target(name)
        assert target == f"{cls.__module__}:{cls.__qualname__}"
        facts = class_facts(target)
        for f in dataclasses.fields(cls):
            if isinstance(f.default, int | float | str | bool):
                assert facts[f.name] == f.default, (name, f.name)


def test_the_setting_names_the_task_s_own_default() -> None:
    max_len = TASKS.get("rotten-tomatoes")().max_len  # 48, not the other text tasks' 32
    assert f"{max_len} tokens" in model_text("rotten-tomatoes", {})
    assert "first 2 layer(s)" in model_text("healthnews", {"num_layers": 2})
    assert model_text("text-csv", {}) == "task `text-csv`"  # no words declared


def test_the_setting_tells_the_two_dirichlet_partitioners_apart() -> None:
    per_class = partition_text({"partition": "dirichlet", "partition_args": {"alpha": 0.1}})
    per_client = {"partition": "dirichlet-clients", "partition_args": {"alpha": 0.1}}
    assert per_class == "Dirichlet(0.1) label skew"
    assert partition_text(per_client) == (
        "per-client Dirichlet(0.1) label skew, equal client sizes"
    )


def test_flasc_s_mechanics_state_its_default_server_lr_and_its_source() -> None:
    lr = create_algorithm("flasc").server_lr  # type: ignore[attr-defined]
    assert algorithm_facts("flasc")["server_lr"] == lr
    text = mechanics("flasc")
    assert text is not None and f"lr {sci(lr)}," in text and "released code's" in text
    assert mechanics("fedit") is None


def test_sci_writes_short_scientific_notation() -> None:
    assert [sci(x) for x in (1e-3, 2.5e-4, 5.0)] == ["1e-3", "2.5e-4", "5e0"]


def _rotten_preset() -> dict:
    """The rotten-tomatoes protocol preset as a run's config (which holds its tuned rate)."""
    preset = Path(__file__).resolve().parents[2] / "configs" / "protocol" / "rotten-tomatoes.yaml"
    with open(preset, encoding="utf-8") as stream:
        setting = yaml.safe_load(stream)
    setting["train"]["lr"] = 1e-3
    return dict(setting)


def test_the_setting_says_when_the_head_is_centred() -> None:
    setting = _rotten_preset()
    assert "centred on its mean over 1024 examples" in describe(setting)
    setting["train"].pop("center_head")
    assert "centred" not in describe(setting)  # the default: no word about it


def test_the_setting_says_when_the_model_runs_in_bf16() -> None:
    setting = _rotten_preset()
    assert "in bf16 autocast (factors" in describe(setting)  # the preset's precision
    setting["train"]["precision"] = "auto"
    assert "bf16 autocast where the CPU has native bf16" in describe(setting)
    setting["train"]["precision"] = "fp32"
    assert "bf16" not in describe(setting)
    setting["train"].pop("precision")
    assert "bf16" not in describe(setting)  # the default: fp32, no word about it
