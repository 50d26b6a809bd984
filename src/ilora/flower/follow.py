"""``ilora flower run``: start a deployed run, follow its log to the end, and say how it ended.

``flwr run APP <connection> --stream`` exits 0 whether the run finished or stopped: a stopped
ILoRA run (too few accepted uploads, a divergence under ``fed.stop_on_divergence``, nodes that
cannot restore their clients' state) is not an error to Flower, because the ServerApp reports
it without raising (no traceback) and writes its reason to ``failure.txt`` on the SuperLink's
machine. The ServerApp also prints the reason as one line starting with
:data:`ilora.flower.server.FAILED_PREFIX`, which the log stream carries to the operator
wherever the command runs. :func:`follow` runs ``flwr run --stream``, passes its output on
(except that line), and returns an :class:`Outcome`; the command exits like ``ilora run``:
0 done, 3 stopped (with the reason), and otherwise 1 (``flwr`` failed, or the SuperLink
reports the ServerApp as failed: ``flwr ls --run-id N --format json``).

Only the ServerApp writes that line: the strategy logs what clients send (error reasons) with
``%r``, so a client cannot start a line of the stream with it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ilora.flower.lifetime import spawn
from ilora.flower.processes import tool
from ilora.flower.server import FAILED_PREFIX

STARTED = re.compile(r"Successfully started run (\d+)")


@dataclass(frozen=True)
class Outcome:
    """How a deployed run ended, as its operator sees it."""

    code: int  # flwr run's exit code
    run_id: int | None  # None: the run did not start
    reason: str | None  # the ServerApp's one-line reason for stopping, None if it did not stop
    status: str = ""  # the SuperLink's final status, e.g. "finished:completed" ("" unknown)
    details: str = ""  # the SuperLink's status details (a failed ServerApp's exception)

    def exit_code(self) -> int:
        """Return the command's exit code: 0 done, 3 stopped, 1 anything else."""
        if self.reason is not None and self.code == 0:
            return 3
        if self.code != 0 or self.run_id is None:
            return 1
        return 1 if self.status.endswith(":failed") else 0

    def message(self) -> str:
        """Return the one line that explains a non-zero :meth:`exit_code`."""
        if self.reason is not None and self.code == 0:
            return self.reason
        if self.code != 0 or self.run_id is None:
            return f"flwr run did not start or follow the run (exit code {self.code}); see above"
        return f"run {self.run_id} failed on the SuperLink ({self.status}): {self.details}"


def flwr_run_command(app: Path, connection: str | None, run_config: Sequence[str]) -> list[str]:
    """Return ``flwr run APP [CONNECTION] --stream [--run-config ...]...``."""
    cmd = [tool("flwr"), "run", str(app), *([connection] if connection else []), "--stream"]
    for item in run_config:
        cmd += ["--run-config", item]
    return cmd


def follow(
    cmd: Sequence[str], echo: Callable[[str], None], env: Mapping[str, str] | None = None
) -> tuple[int, int | None, str | None]:
    """Run ``cmd`` (``flwr run ... --stream``), echo its output; return code, run id, reason."""
    run_id, reason = None, None
    with spawn(  # in our session (the terminal's Ctrl-C reaches it); dies with us
        cmd,
        False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=None if env is None else dict(env),
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(FAILED_PREFIX):
                reason = line[len(FAILED_PREFIX) :].strip()  # the last one counts
                continue
            if run_id is None and (found := STARTED.search(line)):
                run_id = int(found.group(1))
            echo(line)
        code = proc.wait()
    return code, run_id, reason


def run_status(
    connection: str | None, run_id: int, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """Return the SuperLink's ``(status, details)`` of run ``run_id`` (``("", "")``: unknown)."""
    cmd = [tool("flwr"), "ls", *([connection] if connection else []), "--run-id", str(run_id)]
    try:
        done = subprocess.run(
            [*cmd, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=None if env is None else dict(env),
        )
        runs = json.loads(done.stdout)["runs"]
        return str(runs[0]["status"]), str(runs[0].get("status-details", ""))
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError, TypeError):
        return "", ""


def run_and_follow(
    app: Path,
    connection: str | None,
    run_config: Sequence[str],
    echo: Callable[[str], None],
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Start the app's run on the SuperLink, follow it to its end, return how it ended."""
    code, run_id, reason = follow(flwr_run_command(app, connection, run_config), echo, env)
    status, details = ("", "") if run_id is None else run_status(connection, run_id, env)
    return Outcome(code, run_id, reason, status, details)
