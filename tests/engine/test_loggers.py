"""Optional tracking (``log:`` config section): TensorBoard event files and an MLflow file store.

Both extras are in the ``dev`` extra, so these tests always run. The event file is decoded here
with an independent TFRecord reader (length, CRC, payload, CRC; the payload an ``Event``
protocol buffer), and the MLflow run read back with MLflow's own client; both are compared
with the run's ``history.jsonl``.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ilora import config as config_mod
from ilora.cli import app
from ilora.config import ConfigError
from ilora.engine.loggers import flat_params
from ilora.engine.loggers import make_loggers

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
runner = CliRunner()


def run_smoke(tmp_path: Path, *sets: str) -> tuple[Result, list[dict[str, float]]]:
    out = tmp_path / "run-a"
    args = ["run", str(SMOKE), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return result, history


def read_scalars(event_file: Path) -> dict[str, dict[int, float]]:
    """Decode a TFRecord event file: ``{tag: {step: value}}``."""
    from tensorboardX.proto import event_pb2

    data, pos, out = event_file.read_bytes(), 0, {}
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        payload = data[pos + 12 : pos + 12 + length]  # after the length and its CRC
        pos += 12 + length + 4  # then the payload's CRC
        event = event_pb2.Event.FromString(payload)
        for value in event.summary.value:
            out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def test_tensorboard_event_file_holds_every_round(tmp_path: Path) -> None:
    result, history = run_smoke(tmp_path, f"log.tensorboard={tmp_path / 'tb'}")
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "tb" / "run-a").glob("events.out.tfevents.*"))
    assert len(files) == 1
    scalars = read_scalars(files[0])
    assert len(history) == 2
    for rec in history:
        r = rec["round"]
        assert scalars["accuracy"][r] == pytest.approx(rec["accuracy"], rel=1e-6)
        assert scalars["agg_error"][r] == pytest.approx(rec["agg_error"], rel=1e-6, abs=1e-9)
        assert scalars["bytes_up"][r] == rec["bytes_up"]
        assert scalars["clients/sampled"][r] == rec["clients"]["sampled"]


def test_mlflow_file_store_run_matches_history(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    result, history = run_smoke(
        tmp_path, f"log.mlflow.tracking_uri={uri}", "log.mlflow.experiment=smoke"
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("smoke")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run-a"
    assert run.info.status == "FINISHED"
    assert run.data.params["fed.rounds"] == "2"
    assert run.data.params["algorithm"] == "ilora"
    acc = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "accuracy")}
    assert acc == {rec["round"]: pytest.approx(rec["accuracy"]) for rec in history}
    summary = json.loads((tmp_path / "run-a" / "summary.json").read_text())
    final = client.get_metric_history(run.info.run_id, "summary/final_accuracy")
    assert [m.value for m in final] == [pytest.approx(summary["final_accuracy"])]


def test_mlflow_run_of_a_stopped_run_ends_as_failed(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    sets = [f"log.mlflow.tracking_uri={uri}", "log.mlflow.experiment=stopped"]
    args = ["run", str(SMOKE), "--out", str(tmp_path / "run-b"), "--set", "faults.dropout_before=1"]
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output  # every client lost: the run stops loudly
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("stopped")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"


def test_logging_is_off_by_default(tmp_path: Path) -> None:
    cfg = config_mod.load(SMOKE)
    assert make_loggers(cfg, tmp_path / "run") == []


@pytest.mark.parametrize(
    ("key", "module", "extra"),
    [("log.tensorboard", "tensorboardX", "tensorboard"), ("log.mlflow", "mlflow", "mlflow")],
)
def test_missing_extra_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, module: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    setting = f"{key}={tmp_path / 'tb'}" if extra == "tensorboard" else f"{key}.tracking_uri=x"
    cfg = config_mod.load(SMOKE, [setting])
    with pytest.raises(ConfigError, match=rf"pip install ilora\[{extra}\]"):
        make_loggers(cfg, tmp_path / "run")
    result = runner.invoke(app, ["run", str(SMOKE), "--set", setting, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"pip install ilora[{extra}]" in " ".join(result.output.split())


def test_flat_params_spell_every_leaf_by_its_dotted_key() -> None:
    cfg = config_mod.load(SMOKE, ["fed.rounds=7"])
    params = flat_params(cfg)
    assert params["fed.rounds"] == "7"
    assert params["lora.ranks"] == "[2, 4]"
    assert params["data.partition_args.alpha"] == "0.5"
    assert params["log.mlflow.tracking_uri"] == ""
