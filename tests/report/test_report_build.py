"""``ilora report``: result files -> docs/RESULTS.md and PNGs, without importing torch.

The fixture results directory is written here by hand (demo, quality and comm), so every number
the report prints is checked against a value computed in the test from the same rows.
"""

from __future__ import annotations

import ast
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ilora.bench.resultfiles import write_rows
from ilora.cli import app
from ilora.report import SECTIONS
from ilora.report import build

PKG = Path(__file__).resolve().parents[2] / "src" / "ilora" / "report"
PNG = b"\x89PNG\r\n\x1a\n"
SETTING: dict[str, Any] = {
    "task": "healthnews",
    "task_args": {"num_layers": 1, "max_len": 16},
    "per_algorithm": {"ilora-s": {"cv_batches": 2}},
    "lora": {"rank_policy": "cycle", "ranks": [2, 4, 8, 16], "alpha": 16.0, "targets": []},
    "data": {
        "num_clients": 4,
        "partition": "dirichlet",
        "partition_args": {"alpha": 0.3},
        "local_test_fraction": 0.1,
    },
    "fed": {"rounds": 2, "fraction": 0.5},
    "train": {"steps": 3, "batch_size": 8, "lr": 0.005, "head_lr": 0.02, "optimizer": "adamw"},
    "eval": {"subset": 100, "final_full": True},
}
# final accuracy per (algorithm, seed) in the quality headline setting
QUALITY_ACC = {
    "fedit": [0.33, 0.35, 0.37],
    "ilora-s": [0.30, 0.32, 0.34],
    "hetlora": [0.20, 0.25, 0.21],
    "centralized": [0.50, 0.52, 0.54],
}
HEADLINE = ("healthnews", "heterogeneous", 0.3)


def _meta(path: Path, **extra: Any) -> None:
    meta = {"command": "ilora bench x", "date": "2026-01-01T00:00:00+0000", "python": "3.11",
            "torch": "2.13.0", "cpus": 2, "quick": False, **extra}  # fmt: skip
    (path / "meta.json").write_text(json.dumps(meta))


def _demo(root: Path) -> None:
    runs, rounds = [], []
    accs = {
        "fedit": [0.26, 0.28, 0.24],
        "ilora-s": [0.30, 0.27, 0.33],
        "centralized": [0.5, 0.52, 0.51],
    }
    for alg, values in accs.items():
        for seed, acc in enumerate(values):
            runs.append({"algorithm": alg, "seed": seed, "final_accuracy": acc,
                         "personal_accuracy": acc + 0.01, "best_accuracy": acc,
                         "mean_agg_error": 0.7 if alg == "fedit" else 0.01,
                         "mean_download_error": 0.05, "total_bytes_up": 2e6,
                         "total_bytes_down": 2e6, "rounds": 2,
                         "wall_s": 10.0, "rejected": 0, "failed": 0,
                         "counts_recorded": 1})  # fmt: skip
            rounds += [{"algorithm": alg, "seed": seed, "round": r, "accuracy": acc * r / 2,
                        "personal_accuracy": "", "agg_error": 0.1 * r,
                        "download_error": 0.02 * r, "bytes_up": 1e6,
                        "bytes_down": 1e6, "wall_s": 5.0} for r in (1, 2)]  # fmt: skip
    write_rows(root / "demo" / "runs.csv", runs)
    write_rows(root / "demo" / "rounds.csv", rounds)
    sources = ["ilora compare c.yaml --seeds 0,1,2 --algorithms fedit,ilora-s,centralized",
               "ilora compare c.yaml --seeds 0 --algorithms fedit,ilora-s,centralized"]  # fmt: skip
    _meta(root / "demo", sources=sources, notes=["A provenance note."], setting=SETTING,
          runs_dir="runs/demo", data={"train": 100, "test": 50, "classes": 16,
                                      "majority_test": 0.124})  # fmt: skip


def _quality(root: Path, accs: dict[str, list[float]]) -> None:
    runs, rounds = [], []
    task, ranks, alpha = HEADLINE
    for alg, values in accs.items():
        for seed, acc in enumerate(values):
            keys = {"task": task, "ranks": ranks, "alpha": alpha, "seed": seed, "algorithm": alg}
            runs.append({**keys, "final_accuracy": acc, "personal_accuracy": acc,
                         "best_accuracy": acc, "mean_agg_error": 0.1, "bytes_up": 1000,
                         "bytes_down": 1000, "rounds": 2, "wall_s": 4.0,
                         "run_dir": "runs/x"})  # fmt: skip
            rounds += [{**keys, "round": r, "accuracy": acc * r / 2, "personal_accuracy": acc,
                        "agg_error": 0.1, "download_error": 0.03, "train_loss": 1.0,
                        "bytes_up_cum": 500 * r,
                        "bytes_down_cum": 500 * r, "wall_s": 2.0} for r in (1, 2)]  # fmt: skip
    write_rows(root / "quality" / "runs.csv", runs)
    write_rows(root / "quality" / "rounds.csv", rounds)
    _meta(root / "quality", tasks=[task], algorithms=[a for a in accs if a != "centralized"],
          ranks={ranks: ["lora.rank_policy=cycle"], "homogeneous": ["lora.rank=8"]},
          alphas=[0.1, alpha], seeds=[0, 1, 2], centralized_alpha={task: alpha},
          settings={task: SETTING}, workers=2)  # fmt: skip


def _comm(root: Path) -> None:
    rows = [{"algorithm": a, "runs": 3, "down_measured": d, "down_analytic": d,
             "up_measured": u, "up_analytic": u, "max_deviation": 0.0}
            for a, d, u in (("fedit", 0.76, 0.76), ("hetlora", 0.76, 0.68))]  # fmt: skip
    write_rows(root / "comm" / "comm.csv", rows)
    _meta(root / "comm", runs_dir="runs/demo", mb=2**20)


def _results(root: Path) -> Path:
    _demo(root)
    _quality(root, QUALITY_ACC)
    _comm(root)
    return root


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return _results(tmp_path / "results")


def _build(results: Path) -> tuple[str, Path, list[str]]:
    doc, img = results.parent / "docs" / "RESULTS.md", results.parent / "docs" / "img"
    done = build(results, doc, img)
    return doc.read_text(), img, done


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, list[str]]:
    """The fixture results rendered once (tests that only read the output share it)."""
    return _build(_results(tmp_path_factory.mktemp("built") / "results"))


def test_report_renders_every_present_section_in_order(built: tuple[str, Path, list[str]]) -> None:
    text, _, done = built
    assert done == ["demo", "quality", "comm"]
    assert [s for s in SECTIONS if s in done] == done
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h.split(":")[0] for h in heads] == ["## Demo", "## Quality grid", "## Communication"]


def test_report_skips_missing_directories(results: Path) -> None:
    for name in ("quality", "comm"):
        for f in (results / name).iterdir():
            f.unlink()
        (results / name).rmdir()
    text, _, done = _build(results)
    assert done == ["demo"] and "## Quality" not in text and "## Communication" not in text


def test_report_writes_titled_pngs_and_links_them(built: tuple[str, Path, list[str]]) -> None:
    text, img, _ = built
    names = ["demo-accuracy", "demo-agg-error", "demo-download-error", "demo-all-seed0-accuracy",
             "demo-all-seed0-agg-error", "demo-all-seed0-download-error",
             "quality-healthnews-accuracy", "quality-healthnews-accuracy-vs-bytes",
             "quality-healthnews-agg-error", "quality-healthnews-download-error"]  # fmt: skip
    for name in names:
        assert (img / f"{name}.png").read_bytes().startswith(PNG), name
        assert f"](img/{name}.png)" in text, name


def _pm(values: list[float]) -> str:
    xs = [100 * v for v in values]
    return f"{statistics.fmean(xs):.1f} ± {statistics.stdev(xs):.1f}"


def test_quality_table_shows_mean_std_and_rank(built: tuple[str, Path, list[str]]) -> None:
    section = built[0].split("## Quality")[1].split("Personalized accuracy")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    rows = {line.split("|")[1].strip(): line for line in lines}
    means = {a: statistics.fmean(v) for a, v in QUALITY_ACC.items() if a != "centralized"}
    order = sorted(means, key=lambda a: -means[a])
    for alg in means:
        assert f"{_pm(QUALITY_ACC[alg])} ({order.index(alg) + 1})" in rows[alg], rows[alg]
    assert _pm(QUALITY_ACC["centralized"]) in rows["centralized"]


def test_quality_target_check_says_no_with_the_numbers(built: tuple[str, Path, list[str]]) -> None:
    text = built[0]
    focus = 100 * statistics.fmean(QUALITY_ACC["ilora-s"])
    fedit = 100 * statistics.fmean(QUALITY_ACC["fedit"])
    assert "**No.**" in text
    assert f"ilora-s averages {focus:.2f}%" in text
    assert f"fedit {fedit:.2f}% ({fedit - focus:+.2f})" in text


def test_quality_target_check_says_yes_when_ilora_s_leads(results: Path) -> None:
    _quality(results, {**QUALITY_ACC, "fedit": [0.1, 0.1, 0.1]})
    text, _, _ = _build(results)
    assert "**Yes.**" in text and "at or above all 2 other federated methods" in text


def test_quality_states_what_is_missing(built: tuple[str, Path, list[str]]) -> None:
    text = built[0]
    # 3 methods x 3 seeds at alpha 0.3 (+3 centralized) ran; alpha 0.1 and homogeneous did not
    assert "**Partial results.** 12 of the grid's" in text
    assert "healthnews heterogeneous α=0.1: 0 of 9 runs" in text


def test_demo_and_comm_sentences_come_from_the_rows(built: tuple[str, Path, list[str]]) -> None:
    text = built[0]
    ilora_s = 100 * statistics.fmean([0.30, 0.27, 0.33])
    assert f"highest mean final accuracy of the 2 federated methods ({ilora_s:.1f}%)" in text
    assert "A provenance note." in text
    assert "matches its formula in every round of every one of the 6 runs" in text
    assert "hetlora downloads what fedit does but uploads 0.6800 instead of 0.7600" in text


def test_report_cli(results: Path) -> None:
    doc, img = results.parent / "out" / "R.md", results.parent / "out" / "img"
    result = CliRunner().invoke(app, ["report", str(results), "--doc", str(doc), "--img", str(img)])
    assert result.exit_code == 0, result.output
    assert doc.read_text().startswith("# Results")


def test_report_runs_without_importing_torch(results: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom ilora.report import build\n"
        f"build(Path({str(results)!r}), Path({str(tmp_path / 'R.md')!r}), "
        f"Path({str(tmp_path / 'img')!r}))\n"
        "assert 'torch' not in sys.modules, 'the report imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "R.md").is_file()


ALLOWED = ("matplotlib", "ilora.report")


@pytest.mark.parametrize("path", sorted(PKG.glob("*.py")), ids=lambda p: p.name)
def test_report_modules_import_only_stdlib_matplotlib_and_each_other(path: Path) -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            ok = (
                name.split(".")[0] in stdlib
                or name == "ilora.report"
                or any(name == a or name.startswith(a + ".") for a in ALLOWED)
            )
            assert ok, f"{path.name} imports {name}"
