"""``train.center_head``: the run's ``adapter/`` and ILoRA's rebuild are the trained model.

The run's head read ``h - c`` through a hook; what is written holds the plain head with bias
``b - W c``, so plain PEFT loads the adapter onto the task's base model as it was trained, and
``rebuild`` (what ``ilora export`` reads) does not apply ``c`` a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from export_fixtures import trainer  # noqa: F401  (fixtures)
from export_fixtures import write_run

from ilora import config
from ilora.algorithms.base import ALGORITHMS
from ilora.engine.outputs import save_adapter
from ilora.engine.setup import make_task
from ilora.export import rebuild

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _plain_peft(adapter: Path, num_classes: int) -> torch.nn.Module:
    from peft import PeftModel  # imported here: every xdist worker collects this module

    base = make_task("tiny-text", {}).build_model(num_classes, 0)  # seed 0: the run's
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def test_a_centred_runs_adapter_is_the_trained_model_in_plain_peft(
    tmp_path: Path, trainer: Callable[..., Any]
) -> None:
    done = trainer(tmp_path / "run", "tiny-text", {}, "fedit", "train.center_head=64")
    adapter, classes = done.run / "adapter", done.logits.shape[1]
    with torch.no_grad():
        theirs = _plain_peft(adapter, classes)(**done.inputs)
        torch.testing.assert_close(theirs, done.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(rebuild(done.run).model(**done.inputs), done.logits)


def test_an_adapter_saved_before_the_fold_is_folded_on_rebuild(
    tmp_path: Path, trainer: Callable[..., Any]
) -> None:
    """A run saved with the raw head (older ILoRA): its centre is recomputed and folded."""
    from ilora.export import read_adapter

    done = trainer(tmp_path / "run", "tiny-text", {}, "fedit", "train.center_head=64")
    cfg = config.load(done.run / "config.yaml")
    adapter, classes = done.run / "adapter", done.logits.shape[1]
    raw = read_adapter(adapter)
    raw.factors["classifier.bias"] = done.model.classifier.bias.detach().clone()
    save_adapter(raw, cfg, adapter)  # no centre: the raw head, as before the fold
    with torch.no_grad():
        unfolded = _plain_peft(adapter, classes)(**done.inputs)
        assert not torch.allclose(unfolded, done.logits, atol=1e-3)  # the centre matters
        torch.testing.assert_close(rebuild(done.run).model(**done.inputs), done.logits)


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_method_writes_the_centred_model_it_trained(name: str, tmp_path: Path) -> None:
    """The contract over every method: what is written (rebuilt) is the model evaluated."""
    uniform = [] if ALGORITHMS.get(name).heterogeneous_ranks else ["lora.rank_policy=uniform"]
    short = ["fed.rounds=1", "train.steps=2", "data.local_test_fraction=0.25"]
    cfg = config.load(SMOKE, [f"algorithm={name}", *short, *uniform, "train.center_head=64"])
    done = write_run(tmp_path, cfg, 16)  # logits: the model evaluated, its head hook included
    with torch.no_grad():
        rebuilt = rebuild(tmp_path).model(**done.inputs)
    torch.testing.assert_close(rebuilt, done.logits, atol=1e-5, rtol=0)
