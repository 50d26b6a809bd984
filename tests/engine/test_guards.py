"""The run's health checks: a global model that predicts one class is seen, whatever its loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ilora import config
from ilora.engine.evaluation import evaluate
from ilora.engine.evaluation import evaluate_global
from ilora.engine.guards import Guards
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.tasks.base import ArrayDataset

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
CLASSES = 4


class Fixed(nn.Module):
    """Logits that favour class ``k`` for every input (``k`` None: the input's own label)."""

    def __init__(self, k: int | None) -> None:
        super().__init__()
        self.k = k
        self.unused = nn.Parameter(torch.zeros(1))  # a device and a dtype to read

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        wanted = label if self.k is None else torch.full_like(label, self.k)
        return torch.nn.functional.one_hot(wanted, CLASSES).float() * 3.0


def _data(n: int = 50) -> ArrayDataset:
    labels = torch.randint(0, CLASSES, (n,), generator=torch.Generator().manual_seed(3))
    return ArrayDataset({"label": labels.clone()}, labels)


def test_a_constant_model_has_a_top_prediction_share_of_one_and_its_classes_accuracy() -> None:
    data = _data()
    for k in range(CLASSES):
        got = evaluate_global(Fixed(k), data, batch_size=7)
        assert got["top_prediction_share"] == 1.0
        assert got["accuracy"] == pytest.approx(float((data.labels == k).float().mean()))


def test_a_model_that_reads_the_label_has_the_majority_labels_share() -> None:
    data = _data()
    got = evaluate_global(Fixed(None), data, batch_size=7)
    counts = [int((data.labels == k).sum()) for k in range(CLASSES)]
    assert got["accuracy"] == 1.0
    assert got["top_prediction_share"] == pytest.approx(max(counts) / len(data))
    assert "top_prediction_share" not in evaluate(Fixed(None), data, batch_size=7)  # clients'


def test_a_one_class_model_with_a_healthy_loss_warns_once_where_the_loss_guard_is_silent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config.load(SMOKE, ["algorithm=fedit"])
    guards = Guards(cfg, build(cfg).algorithm)
    healthy = {"train_loss": 0.5, "start_loss": 0.7}  # every client fits its own majority
    collapsed = {"accuracy": 0.414, "top_prediction_share": 1.0}
    for r in (1, 2):
        assert guards.losses(r, healthy) == {}  # the loss guard cannot see it
        guards.predictions(r, collapsed)
    err = capsys.readouterr().err
    assert err.count("predicts one class for every evaluated example") == 1
    assert "in round 1 (accuracy 41.4%" in err and "lower train.lr (now" in err
    guards.predictions(3, {"accuracy": 0.7, "top_prediction_share": 0.6})
    assert capsys.readouterr().err == ""


def test_a_run_records_the_share_every_evaluation_and_warns_when_it_reaches_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = config.load(SMOKE, ["algorithm=fedit", "train.head_lr=3", "fed.rounds=3"])
    records = run(cfg).history.records
    shares = [r.metrics["top_prediction_share"] for r in records]
    assert shares[0] == 1.0 and all(0.0 < s <= 1.0 for s in shares)
    err = capsys.readouterr().err
    assert err.count("fedit's global model predicts one class") == 1
    assert "fedit's global model predicts one class for every evaluated example in round 1" in err


def test_a_personalized_methods_warning_calls_its_global_model_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    texts = {}
    for name in ("fedsa-lora", "fedit"):
        cfg = config.load(SMOKE, [f"algorithm={name}", "data.local_test_fraction=0.2"])
        Guards(cfg, build(cfg).algorithm).predictions(
            1, {"accuracy": 0.4, "top_prediction_share": 1.0}
        )
        texts[name] = capsys.readouterr().err
    assert "summary of a personalized method" in texts["fedsa-lora"]
    assert "summary" not in texts["fedit"] and "predicts one class" in texts["fedit"]
