"""The report shows every command as typed today, whatever the meta.json recorded then."""

from __future__ import annotations

import pytest

from ilora.cli import bench_app
from ilora.report._table import SCRIPT_COMMANDS
from ilora.report._table import command_block
from ilora.report._table import current_command


@pytest.mark.parametrize(
    ("recorded", "today"),
    [
        (
            ".venv/bin/python benchmarks/faults.py --config c.yaml --seeds 0,1 --no-clean",
            "ilora bench faults --config c.yaml --seeds 0,1 --no-clean",
        ),
        (
            "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lr_sensitivity.py --lrs 5e-3",
            "OMP_NUM_THREADS=1 ilora bench lr --lrs 5e-3",
        ),
        ("python benchmarks/dp.py", "ilora bench dp"),
        ("benchmarks/flower_parity.py", "ilora bench flower-parity"),
        (
            "OMP_NUM_THREADS=1 ilora bench flower --quick",
            "OMP_NUM_THREADS=1 ilora bench flower --quick",
        ),
        ("python benchmarks/unknown.py --x", "python benchmarks/unknown.py --x"),
        ("ilora report results", "ilora report results"),
    ],
)
def test_a_recorded_script_command_is_shown_as_its_bench_command(recorded: str, today: str) -> None:
    assert current_command(recorded) == today
    assert command_block(recorded) == f"```bash\n{today}\n```\n"


def test_every_script_became_a_registered_bench_command() -> None:
    names = {str(c.name) for c in bench_app.registered_commands}
    assert set(SCRIPT_COMMANDS.values()) <= names
