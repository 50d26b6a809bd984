"""Every wrong CLI argument gives one clear message and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from typer.testing import Result

from ilora.cli import app

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args)


def _assert_clean_error(result: Result, needle: str) -> None:
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert text.count("error:") == 1, result.output
    # rich folds a long word (a path under xdist's longer temp dirs) at the console width
    assert "".join(needle.split()) in "".join(text.split()), result.output


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "bad.yaml").write_text("algorithm: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00 not utf-8 \xc3\x28")
    (tmp_path / "empty_dir").mkdir()
    return tmp_path


CASES = [
    (["run", "{tmp}/missing.yaml"], "config file '{tmp}/missing.yaml' does not exist"),
    (["run", "{tmp}/empty_dir"], "is a directory; give a YAML file"),
    (["run", "{tmp}/bad.yaml"], "is not valid YAML: expected ',' or ']'"),
    (["run", "{tmp}/binary.yaml"], "cannot be read"),
    (["run", "{tmp}/list.yaml"], "must hold a mapping at the top level"),
    (["run", SMOKE, "--set", "algorithm=nope"], "unknown algorithm 'nope'"),
    (["run", SMOKE, "--set", "fed.nope=3"], "unknown config key 'fed.nope'"),
    (["run", SMOKE, "--set", "fed.rounds=abc"], "fed.rounds must be int, got 'abc'"),
    (["run", SMOKE, "--set", "fed.rounds=[1"], "--set fed.rounds: '[1' is not a YAML value"),
    (["run", SMOKE, "--set", "noequals"], "--set takes key.path=value"),
    (["run", SMOKE, "--set", "fed.rounds.x=1"], "'rounds' is not a section"),
    (["run", SMOKE, "--set", "fed.robust=median"], "is not one (ILoRA: QR init"),
    (["run", SMOKE, "--set", "dp.clip_norm=1"], "dp needs fed.weighting: uniform"),
    (["run"], "give an experiment YAML"),
    (["run", "--resume", "{tmp}/empty_dir"], "not a run directory (no config.yaml)"),
    (["run", "--resume", "{tmp}/missing_dir"], "not a run directory (no config.yaml)"),
    (["run", SMOKE, "--resume", "{tmp}/empty_dir"], "drop CONFIG, --set, --out and --overwrite"),
    (["run", SMOKE, "--out", "{tmp}/bad.yaml"], "File exists"),
    (["validate", "{tmp}/bad.yaml"], "is not valid YAML"),
    (["compare", SMOKE, "--algorithms", "fedit", "--seeds", "x"], "--seeds takes comma-separated"),
    (["compare", SMOKE, "--algorithms", "nope"], "unknown algorithm 'nope'"),
    (["bench", "comm", "--runs", "{tmp}/missing_dir"], "no such directory of finished runs"),
    (["bench", "comm", "--runs", "{tmp}/empty_dir"], "no finished runs (summary.json)"),
    (["bench", "comm", "--quick", "--rounds", "0"], "fed.rounds must be >= 1"),
    (["bench", "comm", "--quick", "--algorithms", "nope"], "unknown algorithm 'nope'"),
    (["list", "nothing"], "unknown kind 'nothing'"),
]


@pytest.mark.parametrize(("args", "needle"), CASES)
def test_wrong_arguments_give_one_message_and_exit_2(
    args: list[str], needle: str, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # bench comm --quick reads configs/smoke.yaml
    tmp = str(files)
    result = _invoke([a.replace("{tmp}", tmp) for a in args])
    _assert_clean_error(result, needle.replace("{tmp}", tmp))


def test_an_unreadable_config_is_a_clean_error(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    _assert_clean_error(_invoke(["validate", SMOKE]), "cannot be read: [Errno 13]")


def test_usage_errors_exit_2_without_a_traceback() -> None:
    for args in (["run", "--nope"], ["bench", "comm", "--rounds", "x"], ["nope"]):
        result = _invoke(args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output


KEYS = st.sampled_from(
    ["fed.rounds", "fed.fraction", "fed.robust", "dp.clip_norm", "dp.noise", "lora.ranks",
     "seed", "algorithm", "data.partition_args", "fed", "x.y", "", "fed.rounds.x", "faults.nan"]
)  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["[1", "{a: 1}", "1e999", ".nan", "-1", "0.5", "[]", "null", "ilora", "!!x"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=st.lists(st.tuples(KEYS, VALUES), max_size=3), sep=st.sampled_from(["=", ":", ""]))
def test_fuzzed_overrides_are_accepted_or_refused_cleanly(
    sets: list[tuple[str, str]], sep: str
) -> None:
    args = ["validate", SMOKE]
    for key, value in sets:
        args += ["--set", f"{key}{sep}{value}"]
    result = _invoke(args)
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=60))
def test_fuzzed_config_files_are_accepted_or_refused_cleanly(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = _invoke(["validate", str(path)])
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
