"""``ilora validate`` refuses every kind of bad config without importing torch or transformers.

Each case runs ``python -m ilora validate`` in a fresh interpreter through the probe of
``ilora bench startup``, which reports the exit code and whether any module of ``torch`` or
``transformers`` was loaded when the command ended: nothing stands in for torch in
``sys.modules``, so "not loaded" means its code never ran. The cases cover every check
``engine.setup.validate`` makes (the same function ``build`` calls before ``ilora run`` loads a
model): names, options, hyperparameter types and ranges, the robust and DP settings the
algorithm's aggregation allows, ranks, and the task's data files.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilora.bench.startup import PROBE

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "configs/smoke.yaml"


def _validate(*args: str) -> tuple[dict[str, object], str]:
    """Run ``ilora validate ARGS`` in a fresh process; return the probe's report and stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "FLWR_TELEMETRY_ENABLED": "0"}
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["validate", *args])],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    return json.loads(res.stderr.strip().splitlines()[-1]), res.stdout


def _csv(path: Path, classes: tuple[str, ...], rows: int) -> str:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        writer.writerows([f"review number {i}", classes[i % len(classes)]] for i in range(rows))
    return str(path)


def _text_task(path: str) -> list[str]:
    return ["--set", "task=text-csv", "--set", f"task_args={{path: {path}}}"]


DP = ["--set", "dp.clip_norm=1.0", "--set", "fed.weighting=uniform"]
CASES: dict[str, tuple[list[str], str]] = {
    "unknown algorithm": (["--set", "algorithm=ilroa"], "unknown algorithm 'ilroa'"),
    "unknown task": (["--set", "task=tiny-txt"], "unknown task 'tiny-txt'; did you mean"),
    "unknown algorithm option": (
        ["--set", "algorithm_args={redistrbute: svd}"],
        "algorithm 'ilora' has no option 'redistrbute'; did you mean 'redistribute'?",
    ),
    "unknown task option": (
        ["--set", "task_args={num_trainn: 3}"],
        "task 'tiny-text' (task_args) has no option 'num_trainn'",
    ),
    "unknown per_algorithm section": (
        ["--set", "per_algorithm={fedtt: {}}"],
        "unknown algorithm 'fedtt'; did you mean 'fedit'",
    ),
    "hyperparameter out of range": (
        ["--set", "algorithm_args={init_rms: -1.0}"],
        "init_rms must be >= 0, got -1.0",
    ),
    "hyperparameter of the wrong type": (
        ["--set", "algorithm=fl-tac", "--set", "algorithm_args={kmeans_starts: 1.5}"],
        "kmeans_starts must be an integer >= 1, got 1.5",
    ),
    "task option out of range": (
        ["--set", "task_args={n_train: 0}"],
        "tiny-text: task_args.n_train=0 is out of range: allowed >= 1",
    ),
    "task option of the wrong type": (
        ["--set", "task_args={n_train: 1.5}"],
        "tiny-text: task_args.n_train=1.5 is not an integer: allowed >= 1",
    ),
    "robust aggregation of a non-mean": (
        ["--set", "fed.robust=median"],
        "fed.robust: median replaces a weighted mean of the uploads, but the aggregation of "
        "algorithm 'ilora' is not one",
    ),
    "dp aggregate noise with mixed ranks": (
        [*DP, "--set", "dp.noise=aggregate", "--set", "algorithm=fedit"],
        "algorithm 'fedit' with ranks [2, 4] does not aggregate one",
    ),
    "dp on pooled data": (
        [*DP, "--set", "algorithm=centralized"],
        "dp: algorithm 'centralized' pools every example in one client",
    ),
    "rank out of range": (["--set", "lora.rank=0"], "lora.rank must be >= 1, got 0"),
}


def test_the_smoke_config_is_valid_without_torch_or_transformers() -> None:
    report, out = _validate(SMOKE)
    assert report == {"torch": False, "transformers": False, "exit": 0}, out
    assert out.strip() == f"{SMOKE}: ok"


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_is_one_line_without_torch_or_transformers(case: str) -> None:
    args, message = CASES[case]
    report, out = _validate(SMOKE, *args)
    assert report == {"torch": False, "transformers": False, "exit": 2}, out
    lines = out.strip().splitlines()
    assert lines[0].startswith("error: ") and message in " ".join(lines), out


@pytest.mark.parametrize(
    ("classes", "rows", "message"),
    [
        (("pos", "neg"), 60, ""),  # good data passes
        (("pos",), 60, "one.csv: the training labels hold one class ('pos')"),
        (("pos", "neg"), 20, "min_size = 32, got n=16; lower num_clients"),  # the partition
        ((), 0, "nope.csv' does not exist; fix task_args.path"),
    ],
)
def test_a_text_task_reads_the_users_file_without_transformers(
    tmp_path: Path, classes: tuple[str, ...], rows: int, message: str
) -> None:
    path = _csv(tmp_path / "one.csv", classes, rows) if rows else str(tmp_path / "nope.csv")
    report, out = _validate(SMOKE, "--set", "algorithm=fedit", *_text_task(path))
    assert report == {"torch": False, "transformers": False, "exit": 2 if message else 0}, out
    assert message in " ".join(out.split())


def test_every_algorithm_and_task_is_created_without_torch() -> None:
    code = (
        "import sys\n"
        "from ilora.algorithms.base import ALGORITHMS, create_algorithm\n"
        "from ilora.engine.setup import make_task\n"
        "from ilora.tasks import TASKS\n"
        "for name in ALGORITHMS.names():\n"
        "    create_algorithm(name)\n"
        "for name in TASKS.names():\n"
        "    TASKS.get(name)\n"
        "make_task('tiny-image', {})\n"
        "loaded = sorted({n.partition('.')[0] for n in sys.modules} & {'torch', 'transformers'})\n"
        "print(len(ALGORITHMS.names()), len(TASKS.names()), loaded)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    n_algorithms, n_tasks, loaded = res.stdout.split(maxsplit=2)
    assert int(n_algorithms) >= 20 and int(n_tasks) >= 7
    assert loaded.strip() == "[]", f"importing the modules loaded {loaded.strip()}"
