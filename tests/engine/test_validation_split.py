"""The validation split: held out before the partition, and the test split never read under it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from ilora import config as config_mod
from ilora.config import ConfigError
from ilora.engine import setup as setup_mod
from ilora.engine.simulation import run
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import TaskData

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"


def _rows(ds: ArrayDataset) -> set[bytes]:
    return {ds.inputs["input_ids"][i].numpy().tobytes() for i in range(len(ds))}


def test_validation_is_disjoint_from_test_and_every_client_share() -> None:
    cfg = config_mod.load(
        SMOKE,
        ["data.validation_fraction=0.25", "eval.split=validation", "data.local_test_fraction=0.2"],
    )
    full = setup_mod.load_data(setup_mod.make_task(cfg.task, cfg.task_args))
    exp = setup_mod.build(cfg)
    n_val = round(0.25 * len(full.train))
    assert len(exp.data.test) == n_val and len(exp.data.train) == len(full.train) - n_val
    val = _rows(exp.data.test)
    assert not val & _rows(full.test)
    for share in exp.shares:  # the clients' own evaluation shares: test_personal_validation
        assert not val & _rows(share)
    # the same held-out examples whatever the run seed (a fixed split, like the test split)
    other = setup_mod.build(
        config_mod.load(SMOKE, ["seed=7", "data.validation_fraction=0.25", "eval.split=validation"])
    )
    assert _rows(other.data.test) == val


class _Poisoned(ArrayDataset):
    """A test split that fails the moment anything reads it."""

    def __len__(self) -> int:
        raise AssertionError("the test split was read")

    def subset(self, idx: np.ndarray | torch.Tensor) -> ArrayDataset:
        raise AssertionError("the test split was read")


def test_a_validation_run_never_reads_the_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    real = setup_mod.load_data

    def poisoned(task: object) -> TaskData:
        data = real(task)  # type: ignore[arg-type]
        bad = _Poisoned(dict(data.test.inputs), data.test.labels.clone())
        return TaskData(data.train, bad, data.class_names)

    monkeypatch.setattr(setup_mod, "load_data", poisoned)
    ok = config_mod.load(SMOKE, ["data.validation_fraction=0.2", "eval.split=validation"])
    assert run(ok).history.final["accuracy"] >= 0.0
    with pytest.raises(AssertionError, match="test split was read"):
        run(config_mod.load(SMOKE, ["data.validation_fraction=0.2"]))


def test_validation_split_needs_a_fraction() -> None:
    with pytest.raises(ConfigError, match="data.validation_fraction"):
        config_mod.load(SMOKE, ["eval.split=validation"])
    with pytest.raises(ConfigError, match="validation_fraction"):
        config_mod.load(SMOKE, ["data.validation_fraction=1.0"])


@dataclass
class _Files:
    root: Path

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def test_include_and_per_algorithm_training_sections(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    tuned = "per_algorithm:\n  fedit: {train: {lr: 0.03}}\n  ilora: {train: {lr: 1.0e-4}}\n"
    files.write("tuned/x.yaml", tuned)
    cfg_path = files.write(
        "preset.yaml",
        SMOKE.read_text() + "include: tuned/x.yaml\nper_algorithm:\n  ilora: {init_rms: 0.001}\n",
    )
    fedit = config_mod.load(cfg_path, ["algorithm=fedit"])
    ilora = config_mod.load(cfg_path)
    assert fedit.train.lr == 0.03 and ilora.train.lr == 1e-4
    assert config_mod.algorithm_args(ilora) == {"init_rms": 0.001}  # train is not a hyperparameter
    assert config_mod.load(cfg_path, ["train.lr=0.5"]).train.lr == 0.5  # --set wins
    assert config_mod.load(cfg_path, ["algorithm=ffa-lora"]).train.lr == 0.005  # the file's
    # a run's resolved config depends only on its own rate: retuning another method keeps it
    files.write("tuned/x.yaml", tuned.replace("1.0e-4", "3.0e-4"))
    assert config_mod.to_dict(config_mod.load(cfg_path, ["algorithm=fedit"])) == (
        config_mod.to_dict(fedit)
    )
    # ... and so does tuning a method the file did not list yet (no empty section is left)
    files.write("tuned/x.yaml", tuned + "  hetlora: {train: {lr: 0.001}}\n")
    assert config_mod.to_dict(config_mod.load(cfg_path, ["algorithm=fedit"])) == (
        config_mod.to_dict(fedit)
    )
    files.write("loop.yaml", "include: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        config_mod.load(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        config_mod.load(files.write("missing.yaml", "include: nope.yaml\n"))
