"""The demo comparison (``results/demo/``, by ``ilora export-results``): every method, one setting.

Two tables: the methods run with several seeds (mean ± std over seeds), and every method at
seed 0; per-round plots of accuracy and aggregation error; and what the numbers show, computed
from ``runs.csv`` and ``rounds.csv``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ilora.report import _demo_text as text
from ilora.report._plot import accuracy_baselines
from ilora.report._plot import metric_vs_round
from ilora.report._plot import save_png
from ilora.report._setting import describe
from ilora.report._table import command_block
from ilora.report._table import comparison_markdown
from ilora.report._table import comparison_rows
from ilora.report._table import meta_line
from ilora.report._table import num
from ilora.report._table import read_csv
from ilora.report._table import read_meta

Run = dict[str, Any]


def load_runs(src: Path) -> list[Run]:
    """Return the runs of ``runs.csv`` with their ``rounds.csv`` history, as compare's dicts."""
    history: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in read_csv(src / "rounds.csv"):
        keys = ("accuracy", "personal_accuracy", "agg_error", "download_error")
        rec = {k: num(row.get(k)) for k in keys}
        rec = {k: v for k, v in rec.items() if not math.isnan(v)}
        history[(row["algorithm"], int(row["seed"]))].append({"round": int(row["round"]), **rec})
    runs = []
    for row in read_csv(src / "runs.csv"):
        key = (row["algorithm"], int(row["seed"]))
        runs.append(
            {
                "algorithm": row["algorithm"],
                "seed": key[1],
                "lr": num(row.get("lr")),  # NaN (unknown) in result files exported before it
                "final_accuracy": num(row["final_accuracy"]),
                "final_personal_accuracy": num(row["personal_accuracy"]),
                "mean_agg_error": num(row["mean_agg_error"]),
                "mean_download_error": num(row.get("mean_download_error")),
                "total_bytes_up": num(row["total_bytes_up"]),
                "total_bytes_down": num(row["total_bytes_down"]),
                "rounds": int(row["rounds"]),
                "wall_s": num(row["wall_s"]),
                "rejected": int(row.get("rejected") or 0),
                "failed": int(row.get("failed") or 0),
                "counts_recorded": row.get("counts_recorded") == "1",
                "history": sorted(history[key], key=lambda r: r["round"]),
            }
        )
    return runs


def _seeds_of(command: str) -> int:
    """Return how many seeds a compare command names (``--seeds 0,1,2`` -> 3)."""
    found = re.search(r"--seeds[ =]([\d,]+)", command)
    return len([s for s in found.group(1).split(",") if s]) if found else 1


def _plots(runs: Sequence[Run], img: Path, stem: str, what: str, data: Mapping[str, Any]) -> str:
    lines = accuracy_baselines(data["classes"], data["majority_test"]) if data else None
    acc = metric_vs_round(
        runs, "accuracy", f"Global test accuracy per round ({what})", "accuracy %", lines
    )
    err = metric_vs_round(
        runs,
        "agg_error",
        f"Aggregation error ‖ΔW* − ΔW‖/‖ΔW*‖ per round ({what})",
        "relative error",
    )
    links = [
        save_png(acc, img, f"{stem}-accuracy", f"accuracy per round, {what}"),
        save_png(err, img, f"{stem}-agg-error", f"aggregation error per round, {what}"),
    ]
    if any("download_error" in rec for run in runs for rec in run["history"]):  # newer runs only
        down = metric_vs_round(
            runs,
            "download_error",
            f"Download error mean_k ‖W_k − W_g‖/‖W_g‖ per round ({what})",
            "relative distance",
        )
        links.append(
            save_png(down, img, f"{stem}-download-error", f"download error per round, {what}")
        )
    return "\n".join(links) + "\n"


def _section(
    title: str,
    command: str,
    runs: Sequence[Run],
    img: Path,
    names: tuple[str, str, Mapping[str, Any], float],
) -> tuple[str, list[dict[str, Any]]]:
    """Return a comparison table and its plots.

    ``names`` is (file stem, caption, data facts, the setting's LoRA rate); the table gets a
    ``LoRA lr`` column where some method's rate differs from the setting's.
    """
    rows = comparison_rows(runs)
    rates = text.method_rates(runs)
    if text.own_rates(rates, names[3]):
        for row in rows:
            row["lr"] = f"{rates[row['algorithm']]:g}" if row["algorithm"] in rates else "n/a"
    body = f"### {title}\n\n{command_block(command)}\n{comparison_markdown(rows)}\n"
    return body + _plots(runs, img, *names[:3]), rows


def _counts(runs: Sequence[Run]) -> str:
    counted = [r for r in runs if r["counts_recorded"]]
    rejected = sum(r["rejected"] for r in counted)
    failed = sum(r["failed"] for r in counted)
    return (
        f"{len(counted)} of the {len(runs)} runs record the server's upload checks; they report "
        f"{rejected} rejected and {failed} failed updates (faults off)."
    )


def _options(setting: Mapping[str, Any]) -> str:
    """Return whether the methods run with their default options, from ``per_algorithm``."""
    if not any(setting.get("per_algorithm", {}).values()):
        return "Every method runs with its default options."
    return "The other methods run with their default options."


def _intro(src: Path, meta: Mapping[str, Any], runs: Sequence[Run], per_method: bool) -> list[str]:
    """Return the title, the setting and the provenance; ``per_method``: the rates differ."""
    setting = meta["setting"]
    alpha = setting["data"].get("partition_args", {}).get("alpha")
    ranks = "heterogeneous ranks" if setting["lora"].get("rank_policy") != "uniform" else "one rank"
    lr = float(setting["train"]["lr"])
    lr_words = (
        f"LoRA lr per method (column LoRA lr; {lr:g} where no per-method rate is set)"
        if per_method
        else ""
    )
    return [
        f"## Demo: every method on {setting['task']}, {ranks}, Dirichlet({alpha})\n",
        meta_line(meta) + "\n",
        "Setting: "
        + describe(setting, meta.get("data"), lr_words=lr_words)
        + " "
        + _options(setting)
        + ' "Final accuracy" is the global model on the test '
        'split; "personalized" is every client\'s own model (what it would start its next round '
        "from) on its own held-out share, example-weighted. MB = 10^6 bytes per round, all "
        "clients of the round together. " + _counts(runs) + "\n",
        *(f"{note}\n" for note in meta.get("notes", [])),
        f"Exported into these result files with `ilora export-results {meta.get('runs_dir', '')} "
        f"{src.as_posix()}`.\n",
    ]


def render(src: Path, img: Path) -> str:
    """Return the demo section; write ``demo-*.png`` into ``img``."""
    meta = read_meta(src)
    runs = load_runs(src)
    sources: list[str] = list(meta.get("sources", []))
    multi_cmd = next((c for c in sources if _seeds_of(c) > 1), "")
    single_cmd = next((c for c in sources if _seeds_of(c) == 1), "")
    seeds_per_alg: Mapping[str, int] = defaultdict(int)
    for r in runs:
        seeds_per_alg[r["algorithm"]] += 1  # type: ignore[index]
    most = max(seeds_per_alg.values())
    family = [r for r in runs if seeds_per_alg[r["algorithm"]] == most]
    seed0 = [r for r in runs if r["seed"] == 0]
    setting = meta["setting"]
    setting_lr = float(setting["train"]["lr"])
    rates = text.method_rates(seed0)
    parts = _intro(src, meta, runs, bool(text.own_rates(rates, setting_lr)))
    family_md, family_rows = "", list[dict[str, Any]]()
    if most > 1:
        family_md, family_rows = _section(
            f"The first family, {most} seeds",
            multi_cmd,
            family,
            img,
            ("demo", f"{most}-seed mean", meta.get("data", {}), setting_lr),
        )
        family_md += "\n" + text.per_seed(family)
    all_md, all_rows = _section(
        "Every method, seed 0",
        single_cmd,
        seed0,
        img,
        ("demo-all-seed0", "seed 0, every method", meta.get("data", {}), setting_lr),
    )
    seeded = family if most > 1 else seed0
    findings = text.findings(
        family_rows or all_rows, seeded, all_rows, text.rates_text(rates, setting_lr)
    )
    parts += [family_md, all_md, findings]
    return "\n".join(p for p in parts if p)
