"""``ilora run`` outside a terminal prints one line per round, with an ETA, never hard-wrapped."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from ilora.cli import app
from ilora.cli_progress import RoundLine
from ilora.cli_progress import clock
from ilora.cli_progress import round_progress
from ilora.engine.history import RoundRecord

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
LINE = re.compile(
    r"^round (\d)/3 acc \d+\.\d% loss \d+\.\d{4} MB \d+\.\d{2} "
    r"elapsed \d:\d\d:\d\d eta \d:\d\d:\d\d$"
)


def _record(r: int, acc: float = 0.5) -> RoundRecord:
    return RoundRecord(r, "fedit", 600_000, 400_000, 1.0, {}, {"accuracy": acc, "loss": 0.25})


def test_the_line_has_round_accuracy_loss_megabytes_elapsed_and_eta() -> None:
    lines = RoundLine(total=10, done=2, start=100.0)
    text = lines.line(_record(4, 0.712), now=160.0)  # 2 rounds in 60 s, 6 to go: 3 min
    assert text == "round 4/10 acc 71.2% loss 0.2500 MB 1.00 elapsed 0:01:00 eta 0:03:00"
    assert clock(3725.4) == "1:02:05"


def test_a_non_terminal_console_gets_one_line_per_round() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=False, soft_wrap=True)
    with round_progress(console, "fedit seed 0", total=3, done=0) as show:
        for r in (1, 2, 3):
            show(_record(r))
    lines = stream.getvalue().splitlines()
    assert [LINE.match(line) is not None for line in lines] == [True] * 3, lines


def test_a_terminal_gets_a_bar_with_an_eta() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with round_progress(console, "fedit seed 0", total=3, done=0) as show:
        show(_record(1))
    assert "eta" in stream.getvalue() and "1/3" in stream.getvalue()


def test_run_in_a_pipe_logs_every_round(tmp_path: Path) -> None:
    args = ["run", str(SMOKE), "--set", "fed.rounds=3", "--set", "train.steps=1"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    rounds = [m.group(1) for m in map(LINE.match, result.output.splitlines()) if m]
    assert rounds == ["1", "2", "3"], result.output
