"""The codec round-trips our boundary types through Flower records bit for bit."""

from __future__ import annotations

import pytest
import torch

from ilora import config as config_mod
from ilora.flower import codec
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import Upload


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "enc.q.lora_A": torch.randn(4, 6, generator=g),
        "enc.q.lora_B": torch.randn(6, 4, generator=g).t(),  # non-contiguous
        "classifier.weight": torch.randn(3, 6, generator=g, dtype=torch.float64),
        "cv/steps": torch.arange(5),
    }


def test_download_round_trip_is_canonical_and_exact() -> None:
    tensors = _tensors()
    payload = Payload(tensors, {"lr": 0.5, "phase": "global", "warm": True, "k": 3})
    got, client, rnd = codec.decode_download(
        codec.encode_download(payload, ClientInfo(3, 8, 120), RoundInfo(2, 7))
    )
    assert client == ClientInfo(3, 8, 120) and rnd == RoundInfo(2, 7)
    assert got.config == payload.config
    assert list(got.tensors) == sorted(tensors)
    for key, t in tensors.items():
        want = t.to(torch.float32) if t.is_floating_point() else t
        assert got.tensors[key].dtype == want.dtype
        assert torch.equal(got.tensors[key], want)
        assert got.tensors[key].is_contiguous()


def test_upload_round_trip_keeps_weight_metrics_and_tags() -> None:
    upload = Upload(_tensors(), 17.0, {"train_loss": 0.25, "upload_rank": 4.0})
    got, cid, rnd, fault = codec.decode_upload(codec.encode_upload(upload, cid=5, rnd=9))
    assert (cid, rnd, fault, got.weight, got.metrics) == (5, 9, None, 17.0, upload.metrics)
    assert codec.decode_upload(codec.encode_upload(upload, 5, 9, fault="nan"))[3] == "nan"
    assert torch.equal(got.tensors["enc.q.lora_B"], upload.tensors["enc.q.lora_B"])


def test_client_state_keeps_its_dtypes() -> None:
    tensors = _tensors()
    got = codec.from_arrays(codec.to_arrays(tensors, dtype=None))
    assert got["classifier.weight"].dtype == torch.float64
    assert torch.equal(got["classifier.weight"], tensors["classifier.weight"])


def test_malformed_upload_is_a_codec_error() -> None:
    content = codec.encode_upload(Upload(_tensors(), 1.0), cid=0, rnd=1)
    del content.metric_records["metrics"]
    with pytest.raises(codec.CodecError, match="metrics"):
        codec.decode_upload(content)


def test_config_text_round_trip() -> None:
    cfg = config_mod.load("configs/smoke.yaml", ["algorithm=hetlora", "fed.rounds=3"])
    assert codec.config_from_text(codec.config_to_text(cfg)) == cfg
