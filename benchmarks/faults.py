"""Fault campaign: the same run clean and under a mix of client faults, side by side.

Mix (per sampled client and round, seeded): 30% dropouts (15% before training, 15% after),
10% NaN updates, 10% wrong shapes, 5% stragglers, 10% Byzantine (5% sign-flipped, 5% scaled
x10), with the server's checks on (``fed.max_update_norm``) and norm clipping
(``fed.clip_update_norm``). Every injected fault must be accounted for: each one appears in
``history.jsonl`` as a lost (``failed``) or refused (``rejected``) update, except the Byzantine
ones, which pass the checks and are clipped. Prints a markdown table (final accuracy, accepted /
failed / rejected updates) and the accuracy gap.

Run: ``.venv/bin/python benchmarks/faults.py [--config configs/demo.yaml] [--rounds 20]``;
``--quick`` runs the smoke config (10 clients) for 6 rounds (seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ilora import config
from ilora.engine import faults
from ilora.engine.history import History
from ilora.engine.simulation import run

MIX = {
    "dropout_before": 0.15,
    "dropout_after": 0.15,
    "nan": 0.10,
    "wrong_shape": 0.10,
    "straggler": 0.05,
    "sign_flip": 0.05,
    "scale": 0.05,
}
BYZANTINE = ("sign_flip", "scale")


def _row(name: str, history: History) -> str:
    s = history.summary()
    accepted = sum(r.clients["succeeded"] for r in history.records)
    return (
        f"| {name} | {100 * s['final_accuracy']:.2f} | {accepted} | {s['failed_updates']} | "
        f"{s['rejected_updates']} |"
    )


def _accounted(cfg: config.ExperimentConfig, history: History) -> tuple[int, int]:
    """Return (faults drawn for sampled clients, faults seen in the history or clipped)."""
    from ilora.engine.sampling import sample_clients

    drawn = seen = 0
    for rec in history.records:
        sampled = sample_clients(range(cfg.data.num_clients), cfg.fed.fraction, cfg.seed, rec.round)
        kinds = [faults.draw(cfg.faults, cfg.seed, rec.round, c) for c in sampled]
        drawn += sum(k is not None for k in kinds)
        seen += len(rec.events) + sum(k in BYZANTINE for k in kinds)
    return drawn, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clip", type=float, default=1.0, help="fed.clip_update_norm")
    ap.add_argument("--max-norm", type=float, default=100.0, help="fed.max_update_norm")
    ap.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    ap.add_argument("--quick", action="store_true", help="smoke config, 6 rounds")
    a = ap.parse_args()
    path, rounds = (Path("configs/smoke.yaml"), 6) if a.quick else (a.config, a.rounds)
    quick = ["data.num_clients=10"] if a.quick else []
    common = [f"fed.rounds={rounds}", "fed.fraction=1.0", *quick, *a.set]
    clean_cfg = config.load(path, common)
    guard = [f"fed.max_update_norm={a.max_norm}", f"fed.clip_update_norm={a.clip}"]
    mix = [f"faults.{k}={v}" for k, v in MIX.items()]
    faulty_cfg = config.load(path, [*common, *guard, *mix])
    clean, faulty = run(clean_cfg).history, run(faulty_cfg).history
    drawn, seen = _accounted(faulty_cfg, faulty)
    print(f"config {path}, {rounds} rounds, all clients sampled; faults {MIX}")
    print("| run | final accuracy % | accepted | failed | rejected |")
    print("|---|---|---|---|---|")
    print(_row("clean", clean))
    print(_row("faults + checks + clipping", faulty))
    gap = 100 * (faulty.summary()["final_accuracy"] - clean.summary()["final_accuracy"])
    print(f"\naccuracy gap {gap:+.2f} points; faults drawn {drawn}, accounted for {seen}")


if __name__ == "__main__":
    main()
