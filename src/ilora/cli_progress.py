"""Progress of ``ilora run``: a live bar in a terminal, one plain line per round elsewhere.

In a terminal the bar shows rounds done, the last accuracy, elapsed time and an ETA. When
stdout is a file or a pipe (``nohup``, CI) each finished round prints one line instead, e.g.
``round 3/10 acc 71.2% loss 0.8123 MB 1.25 elapsed 0:00:42 eta 0:01:38``, so a log shows
progress as it happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn
from rich.progress import MofNCompleteColumn
from rich.progress import Progress
from rich.progress import TaskID
from rich.progress import TextColumn
from rich.progress import TimeElapsedColumn
from rich.progress import TimeRemainingColumn

__all__ = ["RoundLine", "round_progress"]


def clock(seconds: float) -> str:
    """Return ``H:MM:SS`` for a non-negative duration."""
    whole = int(round(max(seconds, 0.0)))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@dataclass
class RoundLine:
    """Formats one round as a log line, timing from the first round of this session.

    ``done`` is the round the session starts after (a resumed run's checkpoint).
    """

    total: int
    done: int = 0
    start: float = field(default_factory=time.monotonic)

    def line(self, record: Any, now: float | None = None) -> str:
        """Return the line of a finished round (``RoundRecord``)."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        finished = max(int(record.round) - self.done, 1)
        eta = elapsed / finished * (self.total - int(record.round))
        metrics = record.metrics
        parts = [f"round {record.round}/{self.total}"]
        if "accuracy" in metrics:
            parts.append(f"acc {100 * metrics['accuracy']:.1f}%")
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        megabytes = (record.bytes_up + record.bytes_down) / 1e6
        parts += [f"MB {megabytes:.2f}", f"elapsed {clock(elapsed)}", f"eta {clock(eta)}"]
        return " ".join(parts)


def _accuracy(record: Any) -> str:
    acc = record.metrics.get("accuracy")
    return "" if acc is None else f"acc {100 * acc:.1f}%"


@contextmanager
def round_progress(console: Console, title: str, total: int, done: int) -> Iterator[Any]:
    """Yield ``on_round(record)``: advances the live bar, or prints the round's line.

    Args:
        console: where to show progress; a terminal gets the bar.
        title: the bar's label.
        total: rounds of the run.
        done: rounds already done (resuming).

    """
    if not console.is_terminal:
        lines = RoundLine(total, done)
        yield lambda record: console.print(lines.line(record), markup=False, highlight=False)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar: TaskID = progress.add_task(title, total=total, completed=done, acc="")
        yield lambda record: progress.update(bar, advance=1, acc=_accuracy(record))
