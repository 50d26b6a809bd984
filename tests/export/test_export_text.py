"""Text exports load with transformers and peft alone and give the project's logits (1e-5).

``peft``: ``PeftModel.from_pretrained(AutoModel.from_pretrained(base, num_hidden_layers=k), dir)``
plus the documented mean pooling and head; ``merged``:
``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from export_fixtures import encoder_dirs  # noqa: F401  (fixtures)
from export_fixtures import trainer  # noqa: F401  (fixtures)
from safetensors.torch import load_file
from typer.testing import CliRunner

from ilora.cli import app
from ilora.tasks.text_common import minilm_dir

REVIEWS = Path(__file__).resolve().parents[2] / "examples" / "byod" / "reviews.csv"

CASES = [  # (algorithm, encoder, num_layers, center): ILoRA has a residual PEFT cannot hold
    ("fedit", "bert", 1, 0),
    ("ilora", "bert", 0, 0),
    ("ffa-lora", "roberta", 1, 0),
    ("fedit", "deberta-v2", 0, 0),
    ("fedit", "minilm", 1, 0),  # the packaged all-MiniLM-L6-v2 (model_dir left empty)
    ("fedit", "bert", 1, 16),  # train.center_head: the exported head has b - W c in it
    ("ilora", "minilm", 1, 16),
]


def _export(run: Path, fmt: str) -> Path:
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt])
    assert result.exit_code == 0, result.output
    return run / f"export-{fmt}"


def _peft_logits(dest: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from peft import PeftModel  # imported here: every xdist worker collects this module
    from transformers import AutoModel

    meta = json.loads((dest / "ilora_export.json").read_text())
    base = AutoModel.from_pretrained(
        meta["base_model_name_or_path"], num_hidden_layers=meta["num_hidden_layers"]
    )
    model = PeftModel.from_pretrained(base, str(dest)).eval()
    head = load_file(str(dest / "head.safetensors"))
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state  # (B, L, H)
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return pooled @ head["classifier.weight"].T + head["classifier.bias"]


def _args(model_dir: Path | None, layers: int) -> dict[str, Any]:
    args = {"path": str(REVIEWS), "split_column": "split", "max_len": 12, "num_layers": layers}
    return args if model_dir is None else {**args, "model_dir": str(model_dir)}


def _merged_logits(dest: Path, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification  # see _peft_logits

    model = AutoModelForSequenceClassification.from_pretrained(
        str(dest), trust_remote_code=True
    ).eval()
    assert model.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        return model(**inputs).logits  # type: ignore[no-any-return]


@pytest.mark.assets
@pytest.mark.parametrize(("algorithm", "encoder", "layers", "center"), CASES)
def test_text_exports_match_the_project_logits(
    algorithm: str,
    encoder: str,
    layers: int,
    center: int,
    tmp_path: Path,
    encoder_dirs: dict[str, Path],
    trainer: Callable[..., Any],
) -> None:
    model_dir = minilm_dir() if encoder == "minilm" else encoder_dirs[encoder]
    args = _args(None if encoder == "minilm" else model_dir, layers)
    done = trainer(tmp_path / "run", "text-csv", args, algorithm, f"train.center_head={center}")

    peft_dir = _export(done.run, "peft")
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert all(not m.startswith("backbone.") for m in config["target_modules"])
    meta = json.loads((peft_dir / "ilora_export.json").read_text())
    assert bool(meta["folded_layers"]) == (algorithm == "ilora")
    assert ("head_center" in meta) == bool(center)
    base = Path(config["base_model_name_or_path"])
    assert base == (peft_dir / "base" if algorithm == "ilora" else model_dir).resolve()
    assert meta["num_hidden_layers"] == (layers or 2)
    theirs = _peft_logits(peft_dir, done.inputs)
    torch.testing.assert_close(theirs, done.logits, atol=1e-5, rtol=0)

    merged = _merged_logits(_export(done.run, "merged"), done.inputs)
    torch.testing.assert_close(merged, done.logits, atol=1e-5, rtol=0)


@pytest.mark.assets
def test_a_centred_merged_only_run_exports_the_trained_model(
    tmp_path: Path, trainer: Callable[..., Any]
) -> None:
    """FLoRA keeps no factors (its adapter/ holds ilora_head.safetensors): merged export."""
    done = trainer(tmp_path / "run", "text-csv", _args(None, 1), "flora", "train.center_head=16")
    merged = _merged_logits(_export(done.run, "merged"), done.inputs)
    torch.testing.assert_close(merged, done.logits, atol=1e-5, rtol=0)


def test_export_refuses_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "merged"])
    assert result.exit_code == 2
    assert "is not a finished run directory" in result.output
