"""The CLI's shared helpers: failing with an escaped one-line message, parsing list options."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from ilora.cli_common import fail
from ilora.cli_common import split_floats
from ilora.cli_common import split_ints
from ilora.cli_common import split_names
from ilora.config import ConfigError


def test_fail_keeps_brackets_and_exits_2() -> None:
    app = typer.Typer()

    @app.command()
    def boom() -> None:
        fail(ValueError("install the extra: pip install 'ilora[mlflow]'"))

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    assert "error: install the extra: pip install 'ilora[mlflow]'" in result.output


def test_lists_are_split_on_commas_and_trimmed() -> None:
    assert split_names(" fedit, ilora ,,ffa-lora") == ["fedit", "ilora", "ffa-lora"]
    assert split_ints("0, 1,2", "--seeds") == [0, 1, 2]
    assert split_floats("0.1,1e-3", "--alphas") == [0.1, 1e-3]


def test_a_bad_number_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--seeds takes comma-separated integers, got '0,x'"):
        split_ints("0,x", "--seeds")
    with pytest.raises(ConfigError, match=r"--alphas takes comma-separated numbers"):
        split_floats("0.1,a", "--alphas")
