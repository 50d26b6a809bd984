"""The fault campaign section: seed means, paired gaps and sums recomputed here from the rows."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ilora.bench.resultfiles import write_rows
from ilora.report import faults

PNG = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1)
# final accuracy per (variant, seed): faulty − clean = -0.3, -0.7 (mean -0.5, within 1 point)
FINAL = {
    ("clean", 0): 0.460,
    ("clean", 1): 0.440,
    ("faulty", 0): 0.457,
    ("faulty", 1): 0.433,
    ("lost", 0): 0.452,
    ("lost", 1): 0.430,
    ("screened", 0): 0.455,
    ("screened", 1): 0.436,
}
BEST = {key: acc + 0.02 for key, acc in FINAL.items()}
ACCEPTED = {"clean": (40, 40), "faulty": (15, 17), "lost": (13, 14), "screened": (14, 16)}
FAILED = {"clean": (0, 0), "faulty": (15, 14), "lost": (27, 26), "screened": (15, 14)}
REJECTED = {"clean": (0, 0), "faulty": (10, 9), "lost": (0, 0), "screened": (11, 10)}
ROUNDS = 6
# per seed and fault kind of the faulty run: injected, failed, rejected, accepted
COUNTS = {
    0: {
        "dropout_before": (15, 15, 0, 0),
        "nan": (7, 0, 7, 0),
        "sign_flip": (3, 0, 0, 3),
        "honest": (12, 0, 0, 12),
    },
    1: {
        "dropout_before": (14, 14, 0, 0),
        "nan": (6, 0, 6, 0),
        "scale": (3, 0, 3, 0),
        "honest": (14, 0, 1, 13),
    },
}
NORMS = {0: [7.0, 8.0, 9.0], 1: [10.0, 13.0]}


def _curve(variant: str, seed: int) -> list[float]:
    """Accuracy per round 1..ROUNDS: rises towards the final accuracy, slower under faults."""
    final, slow = FINAL[(variant, seed)], 1.5 if variant == "faulty" else 1.0
    return [final - slow * 0.01 * (ROUNDS - r + seed) ** 2 / 4 for r in range(1, ROUNDS + 1)]


def _run_row(variant: str, seed: int) -> dict[str, Any]:
    faulty = variant in ("faulty", "screened")
    i = SEEDS.index(seed)
    return {
        "algorithm": "ilora",
        "variant": variant,
        "seed": seed,
        "final_accuracy": FINAL[(variant, seed)],
        "best_accuracy": BEST[(variant, seed)],
        "rounds": ROUNDS,
        "sampled": 40,
        "accepted": ACCEPTED[variant][i],
        "failed": FAILED[variant][i],
        "rejected": REJECTED[variant][i],
        "empty_rounds": 0,
        "clip_update_norm": 12.0 if faulty else 0.0,
        "max_update_norm": 40.0 if faulty else 0.0,
        "robust": "none",
        "trim_fraction": "",
        "min_cosine": 0.0 if variant == "screened" else -1.0,
        "wall_s": 1.0,
    }


def _results(
    src: Path, seeds: tuple[int, ...] = SEEDS, seed_column: bool = True, screened: bool = False
) -> Path:
    keep = (lambda row: row) if seed_column else (lambda row: {**row, "seed": None})
    variants = ("faulty", "screened", "lost", "clean") if screened else ("faulty", "lost", "clean")
    runs = [_run_row(v, s) for s in seeds for v in variants]
    rounds = [
        {"algorithm": "ilora", "variant": v, "seed": s, "round": r, "accuracy": acc}
        for s in seeds
        for v in variants
        for r, acc in enumerate(_curve(v, s), start=1)
    ]
    acc = [
        {"algorithm": "ilora", "variant": "faulty", "seed": s, "fault": kind}
        | dict(zip(("injected", "failed", "rejected", "accepted"), c, strict=True))
        for s in seeds
        for kind, c in COUNTS[s].items()
    ]
    norms = [
        {"algorithm": "ilora", "variant": "faulty", "seed": s, "round": 1, "cid": i, "norm": n}
        for s in seeds
        for i, n in enumerate(NORMS[s])
    ]
    for name, rows in (("faults", runs), ("rounds", rounds), ("accounting", acc), ("norms", norms)):
        rows = [{k: v for k, v in keep(row).items() if v is not None} for row in rows]
        write_rows(src / f"{name}.csv", rows)
    meta = {"command": "python benchmarks/faults.py", "date": "2026-01-01T00:00:00+0000",
            "config": "c.yaml", "rounds": ROUNDS, "seeds": list(seeds),
            "mix": {"nan": 0.1}, "byzantine_scale": 10.0, "target_points": 1.0,
            "min_success": 0}  # fmt: skip
    (src / "meta.json").write_text(json.dumps(meta))
    return src


def _pct(variant: str, seeds: tuple[int, ...] = SEEDS) -> list[float]:
    return [100 * FINAL[(variant, s)] for s in seeds]


def _gaps(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _signed(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):+.2f} ± {statistics.stdev(xs):.2f}"


def test_summary_table_gives_seed_mean_std_and_update_means(tmp_path: Path) -> None:
    text = faults.render(_results(tmp_path / "faults"), tmp_path / "img")
    faulty = _pct("faulty")
    best = statistics.fmean(100 * BEST[("faulty", s)] for s in SEEDS)
    updates = " / ".join(
        f"{statistics.fmean(counts['faulty']):.1f}" for counts in (ACCEPTED, FAILED, REJECTED)
    )
    row = (
        f"| ilora | faults + checks + clipping | 2 | {statistics.fmean(faulty):.2f} ± "
        f"{statistics.stdev(faulty):.2f} | {best:.2f} | {updates} | clip 12, max 40 |"
    )
    assert row in text
    clean = _pct("clean")
    mean, std = statistics.fmean(clean), statistics.stdev(clean)
    assert f"| ilora | clean | 2 | {mean:.2f} ± {std:.2f} |" in text
    assert "| ilora | clean | 0 | 46.00 | 48.00 | 40 | 0 | 0 | 40 | 0 |" in text
    assert text.index("### Every run") > text.index(row)
    assert (tmp_path / "img" / "faults-accuracy.png").read_bytes().startswith(PNG)


def test_verdict_pairs_the_gaps_by_seed(tmp_path: Path) -> None:
    text = faults.render(_results(tmp_path / "faults"), tmp_path / "img")
    gaps = _gaps(_pct("faulty"), _pct("clean"))
    assert abs(statistics.fmean(gaps)) <= 1
    per_seed = ", ".join(f"seed {s} {g:+.2f}" for s, g in zip(SEEDS, gaps, strict=True))
    assert f"faulty − clean is {_signed(gaps)} points ({per_seed}); the mean gap is within" in text
    tails = {
        v: [statistics.fmean(100 * a for a in _curve(v, s)[-5:]) for s in SEEDS]
        for v in ("faulty", "clean")
    }
    tail = _signed(_gaps(tails["faulty"], tails["clean"]))
    assert f"last 5 evaluated rounds, averaged over seeds, the gap is {tail} points." in text
    assert f"completed all {ROUNDS} rounds with 32 of 80 sampled updates accepted" in text


def test_control_sentence_pairs_faulty_and_lost_by_seed(tmp_path: Path) -> None:
    text = faults.render(_results(tmp_path / "faults"), tmp_path / "img")
    lost = _pct("lost")
    to_control = _gaps(_pct("faulty"), lost)
    assert f"{statistics.fmean(ACCEPTED['lost']):.1f} accepted updates per run" in text
    assert f"({_signed(_gaps(lost, _pct('clean')))} points from clean, paired by seed)" in text
    per_seed = ", ".join(f"seed {s} {g:+.2f}" for s, g in zip(SEEDS, to_control, strict=True))
    assert (
        f"The faulty runs (clip 12, max 40) end {_signed(to_control)} points from the control "
        f"({per_seed}): what the Byzantine updates they accepted cost." in text
    )


def test_accounting_sums_over_seeds_and_norms_pool_them(tmp_path: Path) -> None:
    text = faults.render(_results(tmp_path / "faults"), tmp_path / "img")
    assert "| ilora | faulty | dropout_before | 2 | 29 | 29 | 0 | 0 |" in text
    assert "| ilora | faulty | nan | 2 | 13 | 0 | 13 | 0 |" in text
    assert "| ilora | faulty | sign_flip | 2 | 3 | 0 | 0 | 3 |" in text
    assert "| ilora | faulty | honest | 2 | 26 | 0 | 1 | 25 |" in text
    assert (
        "ilora, faulty (summed over 2 seeds): 42 lost or corrupt updates were injected and 42 "
        "are counted in history.jsonl as failed or rejected (every one accounted for). "
        "Byzantine: 3 of 3 scale updates rejected, 0 accepted; 0 of 3 sign-flip updates "
        "rejected, 3 accepted. Of 26 honest updates, the server rejected 1." in text
    )
    pooled = sorted(NORMS[0] + NORMS[1])
    assert (
        f"the {len(pooled)} updates its clients produced over 2 seeds (before any fault or "
        f"clipping) have norms ‖u − sent‖ from 7 to 13 (median {statistics.median(pooled):.3g}"
        in text
    )
    assert "1 exceed the clip threshold 12, so clipping also shortens" in text
    assert "a scaled (x10) one, at 70 or more, exceeds the bound fed.max_update_norm 40" in text


def test_a_file_without_a_seed_column_reads_as_seed_0(tmp_path: Path) -> None:
    src = _results(tmp_path / "faults", seeds=(0,), seed_column=False)
    assert "seed" not in (src / "faults.csv").read_text().splitlines()[0]
    text = faults.render(src, tmp_path / "img")
    gap = 100 * (FINAL[("faulty", 0)] - FINAL[("clean", 0)])
    assert (
        f"| ilora | faults + checks + clipping | 1 | {100 * FINAL[('faulty', 0)]:.2f} ± 0.00"
        in text
    )
    assert f"faulty − clean is {gap:+.2f} ± 0.00 points (seed 0 {gap:+.2f})" in text
    assert "| ilora | clean | 0 | 46.00 |" in text
    assert "ilora, faulty (summed over 1 seed)" in text
    assert "n/a" not in text


def test_the_screened_runs_get_their_own_row_and_sentences(tmp_path: Path) -> None:
    text = faults.render(_results(tmp_path / "faults", screened=True), tmp_path / "img")
    screened = _pct("screened")
    assert (
        f"| ilora | faults + checks + clipping + direction screen | 2 | "
        f"{statistics.fmean(screened):.2f} ± {statistics.stdev(screened):.2f} |" in text
    )
    assert "| clip 12, max 40, min cosine 0 |" in text
    gaps = _gaps(screened, _pct("clean"))
    assert (
        "ilora, faults + checks + clipping + direction screen: the runs (2 seeds) completed "
        f"all {ROUNDS} rounds with 30 of 80 sampled updates accepted" in text
    )
    assert f"screened − clean is {_signed(gaps)} points" in text
    to_control = _gaps(screened, _pct("lost"))
    assert (
        f"The screened runs (clip 12, max 40, min cosine 0) end {_signed(to_control)} points "
        "from the control" in text
    )


def test_the_target_is_read_from_meta(tmp_path: Path) -> None:
    src = _results(tmp_path / "faults")
    meta = json.loads((src / "meta.json").read_text())
    gap = abs(statistics.fmean(_gaps(_pct("faulty"), _pct("clean"))))
    meta["target_points"] = gap / 2  # a target the same gap misses
    (src / "meta.json").write_text(json.dumps(meta))
    text = faults.render(src, tmp_path / "img")
    assert f"the mean gap is not within the {gap / 2:g}-point target" in text
    del meta["target_points"]
    (src / "meta.json").write_text(json.dumps(meta))
    assert "the target was not recorded" in faults.render(src, tmp_path / "img")
