"""Unit and fuzz tests of the strict config loader (``ilora.config``)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from ilora.config import ConfigError
from ilora.config import DataConfig
from ilora.config import DPConfig
from ilora.config import EvalConfig
from ilora.config import ExperimentConfig
from ilora.config import FaultConfig
from ilora.config import FedConfig
from ilora.config import LogConfig
from ilora.config import TrainConfig
from ilora.config import build
from ilora.config import load
from ilora.config import set_dotted
from ilora.config import to_dict
from ilora.lora.spec import LoRASpec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- defaults and successful loads


def test_defaults_load() -> None:
    assert load(None) == ExperimentConfig()
    assert build(ExperimentConfig, {}) == ExperimentConfig()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(_write(tmp_path, "")) == ExperimentConfig()


def test_smoke_config_loads_with_its_values() -> None:
    cfg = load(SMOKE)
    assert cfg.algorithm == "ilora"
    assert cfg.task == "tiny-text"
    assert cfg.data.num_clients == 4
    assert cfg.lora.rank_policy == "cycle"
    assert cfg.fed.rounds == 2


def test_overrides_apply_to_dotted_paths() -> None:
    cfg = load(SMOKE, ["fed.rounds=1", "algorithm=fedit", "data.partition_args={alpha: 1.0}"])
    assert cfg.fed.rounds == 1
    assert cfg.algorithm == "fedit"
    assert cfg.data.partition_args == {"alpha": 1.0}


def test_override_value_is_parsed_as_yaml() -> None:
    cfg = load(None, ["lora.ranks=[2, 4]", "lora.rank_policy=cycle", "train.train_head=false"])
    assert cfg.lora.ranks == (2, 4)
    assert cfg.train.train_head is False


def test_tuples_come_from_yaml_lists(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "lora:\n  rank_policy: tiers\n  ranks: [2, 8]\n  tier_fractions: [0.25, 0.75]\n"
        "  targets: ['^fc$']\n",
    )
    lora = load(path).lora
    assert lora.ranks == (2, 8)
    assert isinstance(lora.ranks, tuple)
    assert lora.tier_fractions == (0.25, 0.75)
    assert isinstance(lora.tier_fractions, tuple)
    assert lora.targets == ("^fc$",)


def test_ints_are_accepted_for_floats() -> None:
    cfg = build(ExperimentConfig, {"train": {"lr": 1, "momentum": 0}, "lora": {"alpha": 16}})
    assert cfg.train.lr == 1.0
    assert type(cfg.train.lr) is float
    assert type(cfg.train.momentum) is float
    assert type(cfg.lora.alpha) is float
    assert cfg.lora.tier_fractions == ()
    lora = build(LoRASpec, {"rank_policy": "tiers", "ranks": [2, 4], "tier_fractions": [1, 0]})
    assert all(type(f) is float for f in lora.tier_fractions)


@pytest.mark.parametrize("path", [None, SMOKE])
def test_to_dict_round_trips_through_yaml(path: Path | None, tmp_path: Path) -> None:
    cfg = load(path, ["lora.targets=['^a$', 'b']", "algorithm_args={rank_aware: true}"])
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    assert load(_write(tmp_path, text)) == cfg
    assert build(ExperimentConfig, yaml.safe_load(text)) == cfg


def test_to_dict_is_plain_yaml() -> None:
    data = to_dict(load(SMOKE))
    assert data["lora"]["ranks"] == [2, 4]
    assert isinstance(data["lora"]["ranks"], list)
    yaml.safe_dump(data)  # only plain types: safe_dump would raise on a tuple or dataclass


def test_set_dotted_creates_sections() -> None:
    data: dict[str, Any] = {}
    set_dotted(data, "fed.rounds", "3")
    set_dotted(data, "algorithm", "fedit")
    assert data == {"fed": {"rounds": 3}, "algorithm": "fedit"}


# ---- every error path is a ConfigError that names the key


def test_unknown_key_names_the_dotted_path_and_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        build(ExperimentConfig, {"fed": {"roundz": 3}})
    assert "'fed.roundz'" in str(err.value)
    assert "did you mean 'rounds'?" in str(err.value)


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(_write(tmp_path, "algoritm: fedit\n"))
    assert "'algoritm'" in str(err.value)
    assert "did you mean 'algorithm'?" in str(err.value)


def test_unknown_key_far_from_any_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build(ExperimentConfig, {"train": {"zzzzzz": 1}})
    msg = str(err.value)
    assert "'train.zzzzzz'" in msg
    assert "did you mean" not in msg
    assert "batch_size" in msg and "lr" in msg


def test_unknown_key_in_override() -> None:
    with pytest.raises(ConfigError, match=r"'eval\.evry'.*did you mean 'every'"):
        load(None, ["eval.evry=2"])


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"fed": {"rounds": "three"}}, "fed.rounds", "int"),
        ({"fed": {"rounds": 2.5}}, "fed.rounds", "int"),
        ({"seed": True}, "seed", "int"),  # a bool is not an int here
        ({"train": {"lr": "fast"}}, "train.lr", "float"),
        ({"train": {"train_head": "yes"}}, "train.train_head", "bool"),
        ({"algorithm": 3}, "algorithm", "str"),
        ({"task_args": [1, 2]}, "task_args", "mapping"),
        ({"fed": 3}, "fed", "mapping"),
        ({"lora": {"ranks": 4}}, "lora.ranks", "list"),
        ({"lora": {"ranks": [2, "x"]}}, "lora.ranks[1]", "int"),
    ],
)
def test_wrong_type_names_the_key(data: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        build(ExperimentConfig, data)
    assert key in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"fed": {"weighting": "median"}}, "fed.weighting", ["examples", "uniform"]),
        ({"train": {"optimizer": "adam"}}, "train.optimizer", ["adamw", "sgd"]),
        (
            {"lora": {"rank_policy": "random"}},
            "lora.rank_policy",
            ["uniform", "explicit", "cycle", "tiers"],
        ),
        ({"lora": {"init": "zeros"}}, "lora.init", ["kaiming", "gaussian"]),
    ],
)
def test_wrong_literal_lists_the_allowed_values(
    data: dict[str, Any], key: str, allowed: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        build(ExperimentConfig, data)
    msg = str(err.value)
    assert key in msg
    assert str(allowed) in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("fed.rounds=0", "fed.rounds"),
        ("fed.fraction=1.5", "fed.fraction"),
        ("data.num_clients=0", "data.num_clients"),
        ("train.lr=0", "train.lr"),
        ("train.steps=0", "train.steps"),
        ("lora.rank=0", "lora.rank"),
        ("lora.dropout=1.0", "lora.dropout"),
        ("lora.rank_policy=cycle", "lora.ranks"),
        ("eval.every=0", "eval.every"),
    ],
)
def test_out_of_range_value_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, [override])
    assert key in str(err.value)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "fed: {rounds: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert "not valid YAML" in str(err.value)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_non_mapping_top_level_names_the_file(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(path) in str(err.value)
    assert "mapping" in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("item", ["fed.rounds", "=3", ""])
def test_set_without_equals_names_the_item(item: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(None, [item])
    assert "key.path=value" in str(err.value)
    assert repr(item) in str(err.value)


def test_set_through_a_scalar_names_the_key() -> None:
    data: dict[str, Any] = {"fed": 3}
    with pytest.raises(ConfigError) as err:
        set_dotted(data, "fed.rounds", "2")
    assert "fed.rounds" in str(err.value)
    assert "'fed' is not a section" in str(err.value)
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        load(None, ["seed=1", "seed.x=2"])


def test_huge_int_for_a_float_is_a_config_error() -> None:
    """YAML reads ``lr: 1000…0`` (400 digits) as an int that ``float()`` cannot hold."""
    with pytest.raises(ConfigError) as err:
        load(None, ["train.lr=1" + "0" * 400])
    assert "train.lr" in str(err.value)


# ---- fuzz: any nested mapping either builds or raises ConfigError


SECTIONS: dict[str, type[Any]] = {
    "lora": LoRASpec,
    "data": DataConfig,
    "fed": FedConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "faults": FaultConfig,
    "log": LogConfig,
    "dp": DPConfig,
}


def _field_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _literal_values() -> list[str]:
    values: set[str] = set()
    for cls in (ExperimentConfig, *SECTIONS.values()):
        for tp in typing.get_type_hints(cls).values():
            if typing.get_origin(tp) is typing.Literal:
                values.update(typing.get_args(tp))
    return sorted(values)


def test_sections_cover_every_nested_dataclass() -> None:
    hints = typing.get_type_hints(ExperimentConfig)
    nested = {k for k, tp in hints.items() if dataclasses.is_dataclass(tp)}
    assert nested == set(SECTIONS)
    assert all(hints[k] is cls for k, cls in SECTIONS.items())


ALL_NAMES = sorted({n for cls in (ExperimentConfig, *SECTIONS.values()) for n in _field_names(cls)})
KEYS = st.one_of(st.sampled_from(ALL_NAMES), st.text(max_size=8))
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(_literal_values()),
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)
INTS = st.one_of(st.integers(), st.integers(min_value=-(2**1100), max_value=2**1100))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), INTS)


def _typed(tp: Any) -> st.SearchStrategy[Any]:
    """Return values that mostly fit the annotation ``tp``, so validation gets past the types."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(_typed(args[0]), max_size=4)
    if origin is dict or tp is dict:
        return st.dictionaries(st.text(max_size=8), VALUES, max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: INTS,
        float: FLOATS,
        bool: st.booleans(),
        str: st.text(max_size=8),
    }
    return simple[tp]


def _mapping_of(cls: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Return mappings of some fields of ``cls``, each value typed or arbitrary."""
    hints = typing.get_type_hints(cls)
    options: dict[str, st.SearchStrategy[Any]] = {}
    for name in _field_names(cls):
        tp = hints[name]
        typed = _mapping_of(tp) if dataclasses.is_dataclass(tp) else _typed(tp)
        options[name] = st.one_of(typed, typed, VALUES)
    return st.fixed_dictionaries({}, optional=options)


CONFIGS = st.one_of(st.dictionaries(KEYS, VALUES, max_size=6), _mapping_of(ExperimentConfig))


@settings(max_examples=200, deadline=None)
@given(CONFIGS)
def test_build_only_raises_config_error(data: dict[Any, Any]) -> None:
    try:
        cfg = build(ExperimentConfig, data)
    except ConfigError:
        return
    assert isinstance(cfg, ExperimentConfig)
