"""The ``ilora`` command line (DESIGN.md §2): list, validate, run, compare on the smoke config."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import ClassVar

import pytest
import torch
import yaml
from click.testing import Result
from safetensors.torch import load_file
from typer.testing import CliRunner

import ilora.algorithms  # noqa: F401  (registers every algorithm)
import ilora.tasks  # noqa: F401  (registers every task)
from ilora import config as config_mod
from ilora.algorithms.base import ALGORITHMS
from ilora.cli import app
from ilora.config import ConfigError
from ilora.data.partitioners import PARTITIONERS
from ilora.engine import setup as setup_mod
from ilora.lora.state import adapted
from ilora.tasks.base import TASKS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
FAST = ["--set", "fed.rounds=1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def flat(result: Result) -> str:
    """Return the output with rich's line wrapping undone (every whitespace run is one space)."""
    return " ".join(result.output.split())


def assert_user_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one clean message holding every fragment, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "error:" in result.output
    text = flat(result)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


# ---- ilora list


@pytest.mark.parametrize(
    ("kind", "registry"),
    [("algorithms", ALGORITHMS), ("tasks", TASKS), ("partitioners", PARTITIONERS)],
)
def test_list_prints_registered_names(kind: str, registry: Any) -> None:
    result = invoke("list", kind)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == registry.names()
    assert registry.names()


@pytest.mark.parametrize(
    "command", ["--help", "list algorithms", "list tasks", "list partitioners", "bench --help"]
)
def test_light_commands_import_neither_torch_nor_transformers(command: str) -> None:
    """A fresh ``python -m ilora`` process (bench.startup's probe): nothing heavy loaded."""
    from ilora.bench.startup import SRC
    from ilora.bench.startup import time_command

    got = time_command(SRC, command)
    assert got["torch"] is False and got["transformers"] is False, got


def test_every_algorithm_name_resolves_to_the_class_its_table_names() -> None:
    from ilora.algorithms import __path__ as paths
    from ilora.algorithms.catalog import discover

    table = discover(paths)
    assert len(table) == 20  # the 19 modules' names and the ilora-s preset
    for name, target in table.items():
        cls = ALGORITHMS.get(name)
        assert f"{cls.__module__}:{cls.__qualname__}" == target
    assert ALGORITHMS.preset("ilora-s") == {"control_variates": True}


def test_list_unknown_kind_exits_2() -> None:
    result = invoke("list", "widgets")
    assert_user_error(result, "unknown kind 'widgets'", "algorithms, tasks, partitioners")


# ---- ilora validate


def test_validate_smoke_config() -> None:
    result = invoke("validate", SMOKE)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert "Traceback" not in result.output


def test_validate_unknown_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("algorithm: ilora\nfed:\n  roundz: 1\n")
    result = invoke("validate", path)
    assert_user_error(result, "'fed.roundz'", "did you mean 'rounds'?")


def test_validate_unknown_top_level_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("algoritm: ilora\n")
    assert_user_error(invoke("validate", path), "'algoritm'", "did you mean 'algorithm'?")


def test_validate_unknown_algorithm_suggests() -> None:
    result = invoke("validate", SMOKE, "--set", "algorithm=ilroa")
    assert_user_error(result, "unknown algorithm 'ilroa'", "did you mean 'ilora'")


def test_validate_unknown_algorithm_arg_names_the_valid_ones() -> None:
    result = invoke("validate", SMOKE, "--set", "algorithm_args={redistrbute: svd}")
    assert_user_error(result, "'redistrbute'", "did you mean 'redistribute'?", "valid:")


def test_validate_unknown_task_suggests() -> None:
    assert_user_error(
        invoke("validate", SMOKE, "--set", "task=tiny-txt"),
        "unknown task 'tiny-txt'",
        "did you mean 'tiny-text'",
    )


def test_validate_unknown_task_option_names_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("task: tiny-text\ntask_args:\n  num_trainn: 3\n")
    result = invoke("validate", path)
    assert_user_error(result, "'num_trainn'", "did you mean 'n_train'?", "valid:", "n_test")


def test_validate_rank_out_of_range() -> None:
    result = invoke("validate", SMOKE, "--set", "lora.rank=0")
    assert_user_error(result, "lora.rank must be >= 1, got 0")


def test_validate_wrong_type() -> None:
    result = invoke("validate", SMOKE, "--set", "fed.rounds=many")
    assert_user_error(result, "fed.rounds must be int", "'many'")


def test_validate_set_without_equals() -> None:
    assert_user_error(invoke("validate", SMOKE, "--set", "fed.rounds"), "key.path=value")


def test_validate_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = invoke("validate", path)
    assert_user_error(result, "does not exist")
    assert str(path) in "".join(result.output.split())


def test_validate_bad_yaml_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("fed: {rounds: [1\n")
    result = invoke("validate", path)
    assert_user_error(result, "not valid YAML")
    assert str(path) in "".join(result.output.split())


# ---- ranks


@dataclass
class SingleRankAlgorithm:
    heterogeneous_ranks: ClassVar[bool] = False


def test_mixed_ranks_rejected_for_single_rank_algorithms() -> None:
    cfg = config_mod.load(SMOKE, ["algorithm=fedit"])
    ranks = cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed)
    assert len(set(ranks)) > 1
    with pytest.raises(ConfigError) as err:
        setup_mod.check_ranks(cfg, SingleRankAlgorithm(), ranks, torch.nn.Linear(4, 4))  # type: ignore[arg-type]
    msg = str(err.value)
    assert "'fedit' needs one rank for every client" in msg
    assert "[2, 4]" in msg
    assert "lora.rank_policy: uniform" in msg
    # Every registered single-rank algorithm is rejected the same way through the CLI.
    for name in ALGORITHMS.names():
        if not ALGORITHMS.get(name).heterogeneous_ranks:
            result = invoke("run", SMOKE, *FAST, "--set", f"algorithm={name}")
            assert_user_error(result, "needs one rank for every client")


def test_uniform_ranks_pass_the_check() -> None:
    cfg = config_mod.load(SMOKE, ["lora.rank_policy=uniform", "lora.rank=2"])
    ranks = cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed)
    setup_mod.check_ranks(cfg, SingleRankAlgorithm(), ranks, torch.nn.Linear(4, 4))  # type: ignore[arg-type]


def test_rank_larger_than_a_layer_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke(
        "run",
        SMOKE,
        *FAST,
        "--set",
        "lora.rank_policy=uniform",
        "--set",
        "lora.rank=999",
        "--out",
        tmp_path / "run",
    )
    assert_user_error(result, "rank 999 exceeds", "lower lora.rank")


def test_run_unknown_algorithm_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("run", SMOKE, "--set", "algorithm=fedavg", "--out", tmp_path / "run")
    assert_user_error(result, "unknown algorithm 'fedavg'")


# ---- ilora run: the run directory contract


RUN_OVERRIDES = ["fed.rounds=2", "train.steps=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "smoke"
    sets = [a for o in RUN_OVERRIDES for a in ("--set", o)]
    result = invoke("run", SMOKE, *sets, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "final_accuracy" in result.output
    assert str(out) in "".join(result.output.split())
    return out


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_run_config_yaml_loads_back_equal(run_dir: Path) -> None:
    expected = config_mod.load(SMOKE, RUN_OVERRIDES)
    assert config_mod.load(run_dir / "config.yaml") == expected


def test_run_manifest(run_dir: Path) -> None:
    manifest = _json(run_dir / "manifest.json")
    assert manifest["seed"] == 0
    assert manifest["torch"] == torch.__version__
    assert manifest["start"] and manifest["end"]
    assert manifest["start"] <= manifest["end"]  # ISO timestamps sort by time


def test_run_history_has_one_record_per_round(run_dir: Path) -> None:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["round"] for r in records] == [1, 2]
    for r in records:
        assert isinstance(r, dict)
        keys = {"round", "algorithm", "accuracy", "loss", "bytes_up", "bytes_down", "wall_s"}
        assert keys | {"clients", "agg_error"} <= set(r)
        assert r["algorithm"] == "ilora"
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["loss"] > 0 and r["wall_s"] >= 0
        assert r["bytes_up"] > 0 and r["bytes_down"] > 0
        assert set(r["clients"]) >= {"sampled", "succeeded", "failed", "rejected"}
        assert r["clients"]["sampled"] == 4
        assert r["clients"]["succeeded"] == 4
        assert r["clients"]["failed"] == r["clients"]["rejected"] == 0
        assert r["agg_error"] is None or r["agg_error"] >= 0


def test_run_summary(run_dir: Path) -> None:
    summary = _json(run_dir / "summary.json")
    history = [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]
    assert summary["algorithm"] == "ilora"
    assert summary["task"] == "tiny-text"
    assert summary["rounds"] == 2
    for key in ("final_accuracy", "best_accuracy", "wall_s"):
        assert isinstance(summary[key], float)
    assert summary["best_accuracy"] >= summary["final_accuracy"]
    assert summary["best_accuracy"] == pytest.approx(max(r["accuracy"] for r in history))
    assert summary["total_bytes_up"] == sum(r["bytes_up"] for r in history)
    assert summary["total_bytes_down"] == sum(r["bytes_down"] for r in history)


def test_run_adapter_is_in_peft_format(run_dir: Path) -> None:
    config = _json(run_dir / "adapter" / "adapter_config.json")
    assert config["peft_type"] == "LORA"
    r = config["r"]
    assert isinstance(r, int) and r >= 1
    assert config["lora_alpha"] == 8.0
    targets = config["target_modules"]
    assert targets and all(isinstance(t, str) for t in targets)

    tensors = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    layers = adapted(setup_mod.build(config_mod.load(SMOKE, RUN_OVERRIDES)).model)
    assert set(targets) == set(layers)
    for module in targets:
        a = tensors[f"base_model.model.{module}.lora_A.weight"]
        b = tensors[f"base_model.model.{module}.lora_B.weight"]
        assert a.shape == (r, layers[module].d_in)
        assert b.shape == (layers[module].d_out, r)
        assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert all(k.startswith("base_model.model.") for k in tensors)


# ---- ilora compare


COMPARE_ALGORITHMS = ("fedit", "ilora")
COMPARE_SEEDS = (0, 1)


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    result = invoke(
        "compare",
        SMOKE,
        "--algorithms",
        ",".join(COMPARE_ALGORITHMS),
        "--seeds",
        ",".join(map(str, COMPARE_SEEDS)),
        *FAST,
        "--set",
        "train.steps=2",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return out


def test_compare_writes_one_run_dir_per_algorithm_and_seed(compare_dir: Path) -> None:
    for alg in COMPARE_ALGORITHMS:
        for seed in COMPARE_SEEDS:
            run = compare_dir / f"{alg}-seed{seed}"
            for name in ("config.yaml", "manifest.json", "history.jsonl", "summary.json"):
                assert (run / name).is_file(), run / name
            assert _json(run / "manifest.json")["seed"] == seed
            assert _json(run / "summary.json")["algorithm"] == alg
            assert _json(run / "summary.json")["rounds"] == 1
            assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_compare_records_the_setting_rate_for_export(compare_dir: Path) -> None:
    record = _json(compare_dir / "compare.json")
    assert record["setting_lr"] == config_mod.load(SMOKE).train.lr
    assert record["overrides"] == ["fed.rounds=1", "train.steps=2"]


def test_compare_tables_have_a_row_per_algorithm(compare_dir: Path) -> None:
    md = (compare_dir / "comparison.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    for alg in COMPARE_ALGORITHMS:
        assert sum(line.split("|")[1].strip().strip("`*") == alg for line in table) == 1, md

    rows = list(csv.DictReader(io.StringIO((compare_dir / "comparison.csv").read_text())))
    assert sorted(row["algorithm"] for row in rows) == sorted(COMPARE_ALGORITHMS)
    assert all(int(row["seeds"]) == len(COMPARE_SEEDS) for row in rows)


@pytest.mark.parametrize("name", ["accuracy.png", "agg_error.png"])
def test_compare_writes_png_plots(compare_dir: Path, name: str) -> None:
    data = (compare_dir / name).read_bytes()
    assert len(data) > len(PNG_SIGNATURE)
    assert data.startswith(PNG_SIGNATURE)


def test_compare_skips_finished_runs_of_the_same_config(compare_dir: Path, tmp_path: Path) -> None:
    """A second compare reuses finished runs; another config or ``--rerun`` runs again."""
    shutil.copytree(compare_dir / "fedit-seed0", tmp_path / "fedit-seed0")
    summary = tmp_path / "fedit-seed0" / "summary.json"
    before = summary.read_bytes()
    args = ["compare", SMOKE, "--algorithms", "fedit", "--seeds", "0", *FAST, "--out", tmp_path]
    again = invoke(*args, "--set", "train.steps=2")
    assert again.exit_code == 0, again.output
    assert "fedit seed 0: finished run found, skipped" in again.output
    assert summary.read_bytes() == before
    forced = invoke(*args, "--set", "train.steps=2", "--rerun")
    assert forced.exit_code == 0 and "skipped" not in forced.output, forced.output
    changed = invoke(*args, "--set", "train.steps=1")
    assert changed.exit_code == 0 and "skipped" not in changed.output, changed.output
    config = yaml.safe_load((tmp_path / "fedit-seed0" / "config.yaml").read_text())
    assert config["train"]["steps"] == 1


def test_compare_unknown_algorithm_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("compare", SMOKE, "--algorithms", "fedit,ilroa", "--out", tmp_path)
    assert_user_error(result, "unknown algorithm 'ilroa'", "did you mean 'ilora'")


# ---- ilora bench comm


def test_bench_comm_measures_bytes_equal_to_the_formulas(tmp_path: Path) -> None:
    names = "fedit,flasc,fedsa-lora"
    runs = tmp_path / "runs"
    args = ["--algorithms", names, "--out", tmp_path, "--runs-dir", runs]
    result = invoke("bench", "comm", "--quick", *args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "comm.csv").read_text())))
    assert sorted(r["algorithm"] for r in rows) == sorted(names.split(","))
    assert all(float(r["max_deviation"]) == 0.0 and float(r["up_measured"]) > 0 for r in rows)
    assert _json(tmp_path / "meta.json")["quick"] is True
    again = invoke("bench", "comm", "--runs", runs, "--out", tmp_path / "again")  # check only
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "comm.md").read_text().count("| 0.000% |") == 3
