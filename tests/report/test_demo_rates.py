"""The demo section states each method's LoRA rate from ``runs.csv`` (column ``lr``).

Mixed rates: a ``LoRA lr`` column, the setting sentence says the rate is per method, and a
"Rates" bullet names the methods at a per-method rate and those at the setting's. One rate for
every run, or result files exported before the column: the section reads as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ilora.bench.resultfiles import write_rows
from ilora.report import demo

SETTING: dict[str, Any] = {
    "task": "healthnews",
    "task_args": {"num_layers": 1, "max_len": 16},
    "per_algorithm": {},
    "lora": {"rank_policy": "cycle", "ranks": [2, 4], "alpha": 16.0, "targets": []},
    "data": {"num_clients": 4, "partition": "dirichlet", "partition_args": {"alpha": 0.3}},
    "fed": {"rounds": 1, "fraction": 0.5},
    "train": {"steps": 3, "batch_size": 8, "lr": 0.002, "head_lr": 0.02, "optimizer": "adamw"},
    "eval": {"subset": 100, "final_full": True},
}
ACC = {"fedit": 0.30, "ilora-s": 0.35, "fedloru": 0.25, "flasc": 0.15, "centralized": 0.5}
MIXED = {"fedit": 0.00316, "ilora-s": 0.001, "fedloru": 0.002, "flasc": 0.002, "centralized": 0.001}


def _write(src: Path, rates: dict[str, float] | None) -> Path:
    runs, rounds = [], []
    for alg, acc in ACC.items():
        lr = {"lr": rates[alg]} if rates is not None else {}
        runs.append({"algorithm": alg, "seed": 0, **lr, "final_accuracy": acc,
                     "personal_accuracy": acc, "best_accuracy": acc, "mean_agg_error": 0.1,
                     "mean_download_error": 0.0, "total_bytes_up": 1e6, "total_bytes_down": 1e6,
                     "rounds": 1, "wall_s": 1.0, "rejected": 0, "failed": 0,
                     "counts_recorded": 1})  # fmt: skip
        rounds.append({"algorithm": alg, "seed": 0, "round": 1, "accuracy": acc,
                       "personal_accuracy": "", "agg_error": 0.1, "download_error": 0.0,
                       "bytes_up": 1e6, "bytes_down": 1e6, "wall_s": 1.0})  # fmt: skip
    write_rows(src / "runs.csv", runs)
    write_rows(src / "rounds.csv", rounds)
    meta = {"command": "x", "date": "2026-01-01T00:00:00+0000", "python": "3.11",
            "torch": "2.13.0", "cpus": 2, "quick": False, "setting": SETTING,
            "sources": ["ilora compare c.yaml --seeds 0"]}  # fmt: skip
    (src / "meta.json").write_text(json.dumps(meta))
    return src


def _render(tmp_path: Path, rates: dict[str, float] | None) -> str:
    return demo.render(_write(tmp_path / "demo", rates), tmp_path / "img")


def _row(text: str, alg: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith(f"| {alg} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_mixed_rates_give_a_column_a_sentence_and_a_rates_bullet(tmp_path: Path) -> None:
    text = _render(tmp_path, MIXED)
    assert "| algorithm | seeds | LoRA lr |" in text
    assert {alg: float(_row(text, alg)[2]) for alg in ACC} == MIXED
    assert "LoRA lr per method (column LoRA lr; 0.002 where no per-method rate is set)" in text
    assert "LoRA lr 0.002," not in text
    assert (
        "- **Rates.** 3 methods ran at a per-method rate (centralized 0.001, fedit 0.00316, "
        "ilora-s 0.001); 2 at the setting's 0.002 (fedloru, flasc)." in text
    )
    assert "Not tuned" not in text and "runs with its defaults" not in text


def test_one_rate_for_every_run_reads_as_before(tmp_path: Path) -> None:
    text = _render(tmp_path, dict.fromkeys(ACC, 0.002))
    assert "LoRA lr 0.002," in text
    assert "LoRA lr |" not in text and "per method" not in text and "**Rates.**" not in text
    assert "Every method runs with its default options." in text
    assert "- **Lowest.** The lowest global accuracy without a personal model is flasc's" in text


def test_result_files_without_the_column_render_the_setting_rate(tmp_path: Path) -> None:
    text = _render(tmp_path, None)
    assert "LoRA lr 0.002," in text
    assert "LoRA lr |" not in text and "**Rates.**" not in text
