"""Clients' validation shares: held out, never a test share, with each client's label mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ilora import config as config_mod
from ilora.config import ConfigError
from ilora.engine import setup as setup_mod
from ilora.engine.personal_validation import class_quota
from ilora.engine.simulation import run
from ilora.tasks.base import ArrayDataset

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"
VALIDATION = ["data.validation_fraction=0.3", "data.local_test_fraction=0.2"]


def _rows(ds: ArrayDataset) -> set[bytes]:
    return {ds.inputs["input_ids"][i].numpy().tobytes() for i in range(len(ds))}


def test_class_quota_keeps_the_total_and_the_proportions() -> None:
    counts = np.array([7, 0, 2, 11])
    for total in (0, 1, 5, 9, 20, 37):
        quota = class_quota(counts, total)
        assert quota.sum() == total and quota[1] == 0
        exact = total * counts / counts.sum()  # the independent proportional share
        assert np.all(np.abs(quota - exact) < 1.0)


def test_client_validation_shares_are_held_out_with_the_clients_label_mix() -> None:
    tested = setup_mod.build(config_mod.load(SMOKE, VALIDATION))
    validated = setup_mod.build(config_mod.load(SMOKE, [*VALIDATION, "eval.split=validation"]))
    held_out = _rows(validated.data.test)
    for k, own in enumerate(validated.local_tests):
        test_share, train_share = tested.local_tests[k], tested.shares[k]
        assert len(own) == len(test_share) > 0  # as many as its test share
        assert _rows(own) <= held_out  # drawn from the validation split only
        assert not _rows(own) & (_rows(test_share) | _rows(train_share))
        mine = np.concatenate([train_share.labels.numpy(), test_share.labels.numpy()])
        share = np.bincount(mine, minlength=validated.data.num_classes) / len(mine)
        drawn = np.bincount(own.labels.numpy(), minlength=validated.data.num_classes)
        assert np.all(np.abs(drawn - len(own) * share) < 1.0), k


def test_a_personalized_validation_run_reports_personal_accuracy_without_test_shares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = setup_mod.Shares.__getitem__
    test_rows: set[bytes] = set()
    for share in setup_mod.build(config_mod.load(SMOKE, VALIDATION)).local_tests:
        test_rows |= _rows(share)

    def guarded(self: setup_mod.Shares, k: int | slice) -> object:
        got = real(self, k)  # type: ignore[call-overload]
        for ds in got if isinstance(got, list) else [got]:
            assert not _rows(ds) & test_rows, "a client's test share was read"
        return got

    cfg = config_mod.load(SMOKE, [*VALIDATION, "eval.split=validation", "algorithm=fedsa-lora"])
    monkeypatch.setattr(setup_mod.Shares, "__getitem__", guarded)
    assert 0.0 <= run(cfg).history.summary()["final_personal_accuracy"] <= 1.0


def test_a_feature_skew_partition_is_refused_on_validation() -> None:
    with pytest.raises(ConfigError, match="label mix"):
        config_mod.load(SMOKE, [*VALIDATION, "eval.split=validation", "data.partition=by_group"])
