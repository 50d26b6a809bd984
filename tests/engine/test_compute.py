"""``train.device`` / ``train.precision``: resolution, and what crosses the model's boundary.

No GPU here: the device boundary is checked with torch's ``meta`` device, which has shapes and
devices but no values (a stand-in for ``cuda`` in what gets moved where).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TinySetup
from ilora.config import ConfigError
from ilora.config import TrainConfig
from ilora.config import load
from ilora.engine.compute import context_to
from ilora.engine.compute import cpu_flags
from ilora.engine.compute import resolve
from ilora.engine.compute import resolve_precision
from ilora.engine.setup import build
from ilora.lora.spec import LoRASpec
from ilora.lora.state import load_setup
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Features
from ilora.types import LocalSetup
from ilora.types import Payload
from ilora.types import RoundInfo

META = torch.device("meta")


def test_auto_resolves_against_the_hardware(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16\n")
    assert {"avx512_bf16", "amx_bf16"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == set()
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert resolve("cpu", "auto") == ("cpu", "bf16" if native else "fp32")
    assert resolve("auto", "fp32")[0] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    cfg = load("configs/smoke.yaml", ["train.device=cuda"])
    if torch.cuda.is_available():
        assert next(build(cfg).model.parameters()).device.type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            build(cfg)


def test_the_manifest_records_the_resolved_choice(tmp_path: Path) -> None:
    import json

    from ilora.engine.outputs import RunWriter

    cfg = load("configs/smoke.yaml", ["train.precision=auto"])
    RunWriter(tmp_path, cfg)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["device"], manifest["precision"]) == resolve("cpu", "auto")


def test_every_tensor_of_the_context_moves_to_the_device() -> None:
    t = torch.ones(2, 3)
    ctx = ClientContext(
        ClientInfo(0, 2, 10), RoundInfo(1, 0), Payload({"a": t}), LoRASpec(),
        TrainConfig(), base={"b": t}, start_grad={"g": t},
        features=Features(t, torch.zeros(2), 3), trained={"f": t},
    )  # fmt: skip
    moved = context_to(ctx, META)
    tensors = [
        *moved.payload.tensors.values(), *moved.base.values(), *moved.start_grad.values(),  # type: ignore[union-attr]
        moved.features.inputs, moved.features.labels, *moved.trained.values(),  # type: ignore[union-attr]
    ]  # fmt: skip
    assert len(tensors) == 6 and all(x.device == META for x in tensors)
    assert context_to(ctx, torch.device("cpu")) is ctx  # the CPU path is the unchanged context


def test_a_setup_installs_on_the_models_device() -> None:
    setup = TinySetup(LoRASpec(alpha=4.0), [2])
    model = setup.model().to(META)
    factors = {"fc1.lora_A": torch.zeros(2, 6), "fc1.lora_B": torch.zeros(8, 2)}
    params = load_setup(model, LocalSetup(factors))
    assert params and all(p.device == META for p in params.values())
