"""``fed.min_cosine``: the round's accepted updates compared with their coordinate-wise median."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine import faults
from ilora.engine.sampling import sample_clients
from ilora.engine.simulation import run
from ilora.engine.validation import direction_screen
from ilora.engine.validation import update_vectors

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _round(n: int, flipped: set[int], seed: int = 0) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Return uploads and what was sent: honest updates share a direction, plus noise."""
    g = torch.Generator().manual_seed(seed)
    sent = {
        "fc.lora_A": torch.randn(4, 6, generator=g),
        "head.weight": torch.randn(3, 4, generator=g),
    }
    common = {k: torch.randn(v.shape, generator=g) for k, v in sent.items()}
    uploads, sents = {}, {}
    for c in range(n):
        sign = -1.0 if c in flipped else 1.0
        uploads[c] = {
            k: sent[k] + sign * (common[k] + 0.3 * torch.randn(v.shape, generator=g))
            for k, v in sent.items()
        }
        sents[c] = sent
    return uploads, sents


def test_a_sign_flipped_update_is_rejected_and_honest_ones_kept() -> None:
    uploads, sent = _round(7, flipped={2, 5})
    reasons = direction_screen(uploads, sent, 0.0)
    assert sorted(reasons) == [2, 5]
    assert "fed.min_cosine 0" in reasons[2] and "cosine -0." in reasons[2]


def test_off_or_too_few_updates_screen_nothing() -> None:
    uploads, sent = _round(7, flipped={2})
    assert direction_screen(uploads, sent, -1.0) == {}
    two = {c: uploads[c] for c in (0, 2)}
    assert direction_screen(two, {c: sent[c] for c in two}, 0.5) == {}


def test_cosines_match_an_independent_computation() -> None:
    uploads, sent = _round(5, flipped={1}, seed=3)
    deltas = {
        c: torch.cat([(u[k] - sent[c][k]).double().reshape(-1) for k in sorted(u)])
        for c, u in uploads.items()
    }
    median = torch.stack(list(deltas.values())).median(dim=0).values  # odd n: the middle value
    cos = {
        c: float(torch.nn.functional.cosine_similarity(d, median, dim=0)) for c, d in deltas.items()
    }
    threshold = sorted(cos.values())[2]  # reject the two lowest
    assert sorted(direction_screen(uploads, sent, threshold)) == sorted(
        c for c, v in cos.items() if v < threshold
    )


def test_mixed_ranks_are_compared_zero_padded() -> None:
    sent = {0: {"fc.lora_A": torch.zeros(2, 3)}, 1: {"fc.lora_A": torch.zeros(4, 3)}}
    uploads = {0: {"fc.lora_A": torch.ones(2, 3)}, 1: {"fc.lora_A": torch.full((4, 3), 2.0)}}
    vectors = update_vectors(uploads, sent)
    assert vectors[0].tolist() == [1.0] * 6 + [0.0] * 6
    assert vectors[1].tolist() == [2.0] * 12


def test_a_key_with_other_axes_in_one_update_is_left_out_not_a_crash() -> None:
    uploads, sent = _round(5, flipped={3})
    uploads[1] = {**uploads[1], "ns/extra": torch.ones(2, 2)}
    uploads[2] = {**uploads[2], "ns/extra": torch.ones(3)}
    vectors = update_vectors(uploads, sent)
    assert len({v.numel() for v in vectors.values()}) == 1 and vectors[0].numel() == 4 * 6 + 3 * 4
    assert sorted(direction_screen(uploads, sent, 0.0)) == [3]


@pytest.mark.parametrize("name", ["fedit", "ilora"])
def test_the_engine_rejects_sign_flipped_updates_and_counts_them(name: str) -> None:
    # IID shares: every honest update points the same way, so the screen must catch exactly the
    # flipped ones (under label skew it misses some and rejects honest ones: see the docs)
    overrides = [
        f"algorithm={name}", "faults.sign_flip=0.3", "fed.min_cosine=0", "fed.rounds=4",
        "data.num_clients=8", "data.partition=iid", "data.partition_args={}",
        "eval.every=4", "eval.personal_every=4",  # screening happens in every round regardless
    ]  # fmt: skip
    cfg = config.load(SMOKE, overrides)
    records = run(cfg).history.records
    flipped = {
        (r.round, c)
        for r in records
        for c in sample_clients(range(8), cfg.fed.fraction, cfg.seed, r.round)
        if faults.draw(cfg.faults, cfg.seed, r.round, c) == "sign_flip"
    }
    screened = [(r.round, e) for r in records for e in r.events if "min_cosine" in e["reason"]]
    assert len(flipped) >= 4 and {(rnd, e["cid"]) for rnd, e in screened} == flipped
    assert all(e["outcome"] == "rejected" for _, e in screened)
    assert sum(r.clients["rejected"] for r in records) == len(flipped)
    off = config.load(SMOKE, [*overrides[:2], *overrides[3:]])  # fed.min_cosine back to -1
    assert not any(r.events for r in run(off).history.records)
