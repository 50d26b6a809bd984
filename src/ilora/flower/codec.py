"""Our boundary types as Flower records, and back, losslessly.

Tensors cross as one ``ArrayRecord`` (canonical: detached, CPU, C-contiguous, float tensors as
float32, keys sorted; the numpy bytes round-trip bit for bit); scalars cross as ``ConfigRecord``
(payload options, client identity) or ``MetricRecord`` (upload weight and metrics). Every message
carries the round it belongs to, so a reply to an earlier round is recognised and refused.

Record names inside a message's ``RecordDict``:

- download: ``tensors`` (ArrayRecord), ``config`` (the payload's scalars), ``meta`` (``round``,
  ``seed``, ``cid``, ``rank``, ``num_examples``: the client as the server knows it)
- upload: ``tensors``, ``metrics`` (``weight`` and the local metrics), ``meta`` (``round``,
  ``cid``, and ``fault``: the name of a fault the simulation injected into it, or empty, so
  that both runtimes log a rejection with its injected cause), and ``diagnostics`` (optional:
  the client's dense change of the round, ``Upload.diagnostics``, for ``agg_error``; reporting
  only, not counted in ``bytes_up``)
- view (the reply to ``evaluate``): ``metrics`` (the client's own model on its test share and
  ``num_examples``), ``meta`` (``round``, ``cid``) and ``diagnostics`` (the dense changes of
  its start, for ``download_error``)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array
from flwr.app import ArrayRecord
from flwr.app import ConfigRecord
from flwr.app import MetricRecord
from flwr.app import RecordDict

from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.config import build
from ilora.config import parse_yaml
from ilora.config import to_yaml
from ilora.engine.evaluation import ClientView
from ilora.tensors import canonical
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Scalars
from ilora.types import TensorDict
from ilora.types import Upload

WEIGHT = "weight"
DIAGNOSTICS = "diagnostics"


class CodecError(ValueError):
    """A message that does not have the records or fields this runtime sends."""


def to_arrays(
    tensors: Mapping[str, torch.Tensor], dtype: torch.dtype | None = torch.float32
) -> ArrayRecord:
    """Return the tensors as an ``ArrayRecord`` in canonical form.

    Float tensors are cast to ``dtype`` (float32 on the wire); ``None`` keeps every dtype, for
    what never leaves the client (its state in ``context.state``).
    """
    record = ArrayRecord()
    for key, t in canonical(tensors, dtype).items():
        record[key] = Array(t.numpy())
    return record


def from_arrays(record: ArrayRecord) -> TensorDict:
    """Return the tensors of an ``ArrayRecord`` (fresh, writable, keys sorted)."""
    return {key: torch.from_numpy(np.array(record[key].numpy())) for key in sorted(record)}


def config_to_text(cfg: ExperimentConfig) -> str:
    """Return the experiment config as YAML text (what the server sends in the handshake)."""
    return to_yaml(cfg)


def config_from_text(text: str) -> ExperimentConfig:
    """Return the experiment config of YAML ``text``, validated like a config file."""
    loaded = parse_yaml(text)
    if not isinstance(loaded, dict):
        raise ConfigError("the experiment config must be a mapping at the top level")
    cfg: ExperimentConfig = build(ExperimentConfig, loaded)
    return cfg


def encode_download(payload: Payload, client: ClientInfo, rnd: RoundInfo) -> RecordDict:
    meta = ConfigRecord(
        {
            "round": rnd.round,
            "seed": rnd.seed,
            "cid": client.cid,
            "rank": client.rank,
            "num_examples": client.num_examples,
        }
    )
    config = ConfigRecord(dict(payload.config))
    return RecordDict({"tensors": to_arrays(payload.tensors), "config": config, "meta": meta})


def decode_download(content: RecordDict) -> tuple[Payload, ClientInfo, RoundInfo]:
    meta = _config(content, "meta")
    client = ClientInfo(_int(meta, "cid"), _int(meta, "rank"), _int(meta, "num_examples"))
    rnd = RoundInfo(_int(meta, "round"), _int(meta, "seed"))
    config: Scalars = {k: v for k, v in _config(content, "config").items()}  # type: ignore[misc]
    return Payload(from_arrays(_arrays(content)), config), client, rnd


def encode_upload(upload: Upload, cid: int, rnd: int, fault: str | None = None) -> RecordDict:
    """Return an upload's content; ``fault`` names a fault injected into it (simulations)."""
    metrics = MetricRecord({WEIGHT: float(upload.weight), **upload.metrics})
    meta = ConfigRecord({"round": rnd, "cid": cid, "fault": fault or ""})
    content = RecordDict({"tensors": to_arrays(upload.tensors), "metrics": metrics, "meta": meta})
    if upload.diagnostics:
        content[DIAGNOSTICS] = to_arrays(upload.diagnostics)
    return content


def decode_upload(content: RecordDict) -> tuple[Upload, int, int, str | None]:
    """Return ``(upload, cid, round, injected fault or None)`` of an upload message's content."""
    meta = _config(content, "meta")
    if "metrics" not in content.metric_records:
        raise CodecError("upload without its 'metrics' record")
    metrics = {k: float(v) for k, v in content.metric_records["metrics"].items()}  # type: ignore[arg-type]
    if WEIGHT not in metrics:
        raise CodecError("upload without its aggregation weight")
    weight = metrics.pop(WEIGHT)
    upload = Upload(from_arrays(_arrays(content)), weight, metrics, _diagnostics(content))
    fault = str(meta.get("fault", "")) or None
    return upload, _int(meta, "cid"), _int(meta, "round"), fault


def encode_view(view: ClientView, rnd: int) -> RecordDict:
    """Return the reply to ``evaluate``: a client's view of the next round (module docstring)."""
    metrics = MetricRecord({**view.metrics, "num_examples": view.examples})
    meta = ConfigRecord({"round": rnd, "cid": view.cid})
    return RecordDict({"metrics": metrics, "meta": meta, DIAGNOSTICS: to_arrays(view.changes)})


def decode_view(content: RecordDict) -> ClientView:
    """Return the view in an ``evaluate`` reply (its changes are checked by the round step)."""
    meta = _config(content, "meta")
    if "metrics" not in content.metric_records:
        raise CodecError("view without its 'metrics' record")
    metrics = {k: float(v) for k, v in content.metric_records["metrics"].items()}  # type: ignore[arg-type]
    if "num_examples" not in metrics:
        raise CodecError("view without its number of test examples")
    examples = int(metrics.pop("num_examples"))
    return ClientView(_int(meta, "cid"), metrics, examples, _diagnostics(content))


def _diagnostics(content: RecordDict) -> TensorDict:
    record = content.array_records.get(DIAGNOSTICS)
    return {} if record is None else from_arrays(record)


def _arrays(content: RecordDict) -> ArrayRecord:
    if "tensors" not in content.array_records:
        raise CodecError("message without its 'tensors' record")
    return content.array_records["tensors"]


def _config(content: RecordDict, name: str) -> ConfigRecord:
    if name not in content.config_records:
        raise CodecError(f"message without its {name!r} record")
    return content.config_records[name]


def _int(record: ConfigRecord, key: str) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CodecError(f"field {key!r} must be an integer, got {value!r}")
    return value
