"""Fixtures of the export tests: tiny random encoders saved as model directories, and a run.

The encoders are randomly initialised (seeded) BERT, RoBERTa and DeBERTa-v2 configs with the
packaged MiniLM's tokenizer, written with ``save_pretrained`` so transformers loads them like any
model directory. ``train`` runs one short experiment and returns the run directory plus the
logits the project's own model computes on a few test examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine.outputs import RunWriter
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.lora.state import load_setup
from ilora.tasks.text_common import minilm_dir

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}


def _save(model: torch.nn.Module, path: Path) -> Path:
    from ilora.models.encoder import load_tokenizer  # transformers: only when a test needs it

    model.save_pretrained(str(path))  # type: ignore[operator]
    load_tokenizer(minilm_dir()).save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Return ``{model_type: dir}`` of tiny random BERT, RoBERTa and DeBERTa-v2 encoders."""
    from transformers import BertConfig  # imported here: every xdist worker collects the tests
    from transformers import BertModel
    from transformers import DebertaV2Config
    from transformers import DebertaV2Model
    from transformers import RobertaConfig
    from transformers import RobertaModel

    root = tmp_path_factory.mktemp("encoders")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        bert = BertModel(BertConfig(vocab_size=30522, intermediate_size=64, **SIZES))
        roberta = RobertaModel(
            RobertaConfig(
                vocab_size=30522, intermediate_size=64, max_position_embeddings=80, **SIZES
            )
        )
        deberta = DebertaV2Model(
            DebertaV2Config(
                vocab_size=30522, intermediate_size=64, max_position_embeddings=80, **SIZES
            )
        )
    models = {"bert": bert, "roberta": roberta, "deberta-v2": deberta}
    return {name: _save(model, root / name) for name, model in models.items()}


@dataclass
class Trained:
    """A finished run and what the project's model says on ``inputs``."""

    run: Path
    inputs: dict[str, torch.Tensor]
    logits: torch.Tensor
    model: torch.nn.Module


def train(
    out: Path, task: str, task_args: dict[str, object], algorithm: str, *extra: str
) -> Trained:
    """Run ``algorithm`` for one short round on ``task`` and write the run directory ``out``.

    ``extra``: more ``--set`` options (``train.center_head=16``). ``logits`` are the trained
    model's, as the run evaluated it (a ``train.center_head`` hook included).
    """
    sets = [
        f"algorithm={algorithm}",
        f"task={task}",
        f"task_args={task_args}",
        "data.num_clients=2",
        "data.partition=iid",
        "fed.rounds=1",
        "train.steps=2",
        "train.batch_size=8",
        "lora.rank=2",
        "lora.alpha=4.0",
        *extra,
    ]
    return write_run(out, config.load(None, sets), 6)


def write_run(out: Path, cfg: config.ExperimentConfig, examples: int) -> Trained:
    """Run ``cfg``, write its run directory ``out``; logits on ``examples`` test examples."""
    exp = build(cfg)
    result = run(cfg, exp=exp)
    with RunWriter(out, cfg) as writer:
        writer.finish(result)
    load_setup(exp.model, result.setup)
    inputs = exp.data.test.subset(list(range(examples))).inputs
    with torch.no_grad():
        logits = exp.model.eval()(**inputs)
    return Trained(out, inputs, logits, exp.model)


@pytest.fixture
def trainer() -> Callable[..., Trained]:
    return train
