"""Optional experiment tracking: every round's metrics to TensorBoard and/or MLflow.

Off by default; the ``log`` config section turns each on (``log.tensorboard: DIR``,
``log.mlflow: {tracking_uri, experiment}``). The tracking packages are extras and are imported
only when enabled, so the core never needs them: TensorBoard event files are written by
``tensorboardX`` (``pip install ilora[tensorboard]``; no TensorFlow), MLflow runs through
``mlflow``'s client (``pip install ilora[mlflow]``, the ``mlflow-skinny`` client package).

Per round the scalars are the round's metrics (``accuracy``, ``loss``, ``agg_error``,
``train_loss``, ...), ``bytes_up``, ``bytes_down``, ``wall_s`` and ``clients/<outcome>``, at
step = round. MLflow also records the resolved config as flattened parameters, and the run
summary's numbers when the run finishes. One TensorBoard subdirectory and one MLflow run per
run directory, both named after it.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from typing import Protocol

from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.config import to_dict
from ilora.engine.history import RoundRecord


class RoundLogger(Protocol):
    """What a run writer calls: once per round, and once when the run ends."""

    def log_round(self, record: RoundRecord) -> None: ...

    def close(self, summary: Mapping[str, Any] | None) -> None: ...


def _require(module: str, extra: str, key: str) -> ModuleType:
    """Import an optional tracking package or raise a ConfigError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{key} needs the optional package {module.split('.')[0]!r}: "
            f"pip install ilora[{extra}] (or remove {key} from the config)"
        ) from None


def scalars(record: RoundRecord) -> dict[str, float]:
    """Return the round's numbers by name: metrics, bytes, wall time and client outcomes."""
    out = {k: float(v) for k, v in record.metrics.items() if isinstance(v, int | float)}
    out.update(bytes_up=float(record.bytes_up), bytes_down=float(record.bytes_down))
    out["wall_s"] = float(record.wall_s)
    out.update({f"clients/{k}": float(v) for k, v in record.clients.items()})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """Return the config as ``{"fed.rounds": "8", ...}`` (lists and mappings as text)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    walk("", to_dict(cfg))
    return out


class TensorBoardLogger:
    """Scalars per round into ``DIR/<run>/events.out.tfevents.*`` (tensorboardX)."""

    def __init__(self, logdir: Path) -> None:
        tbx = _require("tensorboardX", "tensorboard", "log.tensorboard")
        self.writer = tbx.SummaryWriter(logdir=str(logdir))

    def log_round(self, record: RoundRecord) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record.round)
        self.writer.flush()  # a crashed run keeps every finished round

    def close(self, summary: Mapping[str, Any] | None) -> None:
        self.writer.close()


class MLflowLogger:
    """One MLflow run per run directory: config as parameters, metrics per round (step)."""

    def __init__(self, cfg: ExperimentConfig, run_name: str) -> None:
        uri = cfg.log.mlflow.tracking_uri
        if uri.startswith("file:"):  # the user chose MLflow's local file store explicitly
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracking = _require("mlflow.tracking", "mlflow", "log.mlflow")
        self.entities = _require("mlflow.entities", "mlflow", "log.mlflow")
        self.client = tracking.MlflowClient(tracking_uri=uri)
        name = cfg.log.mlflow.experiment
        found = self.client.get_experiment_by_name(name)
        exp_id = found.experiment_id if found is not None else self.client.create_experiment(name)
        self.run_id: str = self.client.create_run(exp_id, run_name=run_name).info.run_id
        params = [self.entities.Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, values: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_round(self, record: RoundRecord) -> None:
        self._metrics(scalars(record), record.round)

    def close(self, summary: Mapping[str, Any] | None) -> None:
        if summary is not None:
            numbers = {
                f"summary/{k}": float(v)
                for k, v in summary.items()
                if isinstance(v, int | float) and math.isfinite(float(v))
            }
            self._metrics(numbers, int(summary.get("rounds", 0)))
        self.client.set_terminated(self.run_id, "FINISHED" if summary is not None else "FAILED")


def make_loggers(cfg: ExperimentConfig, out: Path) -> list[RoundLogger]:
    """Return the loggers ``cfg.log`` enables for the run written to ``out`` (none by default).

    Raises:
        ConfigError: if an enabled logger's package is not installed (naming the extra).

    """
    loggers: list[RoundLogger] = []
    if cfg.log.tensorboard:
        loggers.append(TensorBoardLogger(Path(cfg.log.tensorboard) / out.name))
    if cfg.log.mlflow.tracking_uri:
        loggers.append(MLflowLogger(cfg, out.name))
    return loggers
