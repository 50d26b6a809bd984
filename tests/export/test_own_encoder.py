"""Your own Hugging Face encoder: any local model directory, LoRA targets named as PEFT does.

Tiny randomly initialised BERT, RoBERTa and DeBERTa-v2 directories (see ``export_fixtures``): each
loads through ``text-csv``, gets LoRA on its query/value projections by default (each
architecture names them differently) or on the modules ``target_modules`` names, and trains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from export_fixtures import encoder_dirs  # noqa: F401  (fixtures)

from ilora import config
from ilora.engine.setup import build
from ilora.lora.state import adapted
from ilora.tasks.text_csv import TextCSV

REVIEWS = Path(__file__).resolve().parents[2] / "examples" / "byod" / "reviews.csv"
DEFAULTS = {  # what each architecture calls its query and value projections
    "bert": r"encoder\.layer\.\d\.attention\.self\.(query|value)",
    "roberta": r"encoder\.layer\.\d\.attention\.self\.(query|value)",
    "deberta-v2": r"encoder\.layer\.\d\.attention\.self\.(query_proj|value_proj)",
}


def _experiment(model_dir: Path, **task_args: Any) -> Any:
    args = {"path": str(REVIEWS), "split_column": "split", "max_len": 12, **task_args}
    sets = [
        "algorithm=fedit",
        "task=text-csv",
        f"task_args={args | {'model_dir': str(model_dir)}}",
        "data.num_clients=2",
        "data.partition=iid",
        "lora.rank=2",
    ]
    cfg = config.load(None, sets)
    return cfg, build(cfg)


@pytest.mark.assets
@pytest.mark.parametrize("arch", list(DEFAULTS))
def test_each_architecture_gets_lora_on_its_query_and_value(
    arch: str, encoder_dirs: dict[str, Path]
) -> None:
    _, exp = _experiment(encoder_dirs[arch])
    names = sorted(adapted(exp.model))
    assert len(names) == 4, names  # 2 layers x (query, value)
    assert all(re.fullmatch(rf"backbone\.{DEFAULTS[arch]}", n) for n in names), names
    logits = exp.model(**exp.data.test.subset([0, 1]).inputs)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


@pytest.mark.assets
def test_target_modules_select_by_name_as_peft_does(encoder_dirs: dict[str, Path]) -> None:
    _, exp = _experiment(encoder_dirs["bert"], target_modules=["key", "attention.output.dense"])
    names = sorted(adapted(exp.model))
    assert names == [
        f"backbone.encoder.layer.{i}.attention.{m}"
        for i in range(2)
        for m in ("output.dense", "self.key")
    ]


def test_an_unknown_model_type_asks_for_target_modules(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mystery"}')
    task = TextCSV(path=str(REVIEWS), model_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"model_type 'mystery' .* set task_args.target_modules"):
        _ = task.lora_targets
    named = TextCSV(path=str(REVIEWS), model_dir=str(tmp_path), target_modules=["q_proj"])
    assert named.lora_targets == (r"(?:^|\.)q_proj$",)
