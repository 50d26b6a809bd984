"""The saved adapter loads in Hugging Face PEFT and computes what our model computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ilora import config
from ilora.engine.outputs import save_adapter
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.lora.state import load_setup

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


@pytest.mark.parametrize(("algorithm", "atol"), [("fedit", 0.0), ("ilora", 1e-3)])
def test_peft_model_matches_the_exported_global_model(
    algorithm: str, atol: float, tmp_path: Path
) -> None:
    from peft import PeftModel  # imported here: every xdist worker collects this module

    cfg = config.load(SMOKE, [f"algorithm={algorithm}"])
    exp = build(cfg)
    result = run(cfg, exp=exp)
    save_adapter(result.setup, cfg, tmp_path)
    load_setup(exp.model, result.setup)
    x = exp.data.test.subset(list(range(16))).inputs
    ours = exp.model.eval()(**x)
    base = exp.task.build_model(exp.data.num_classes, cfg.seed)
    theirs = PeftModel.from_pretrained(base, str(tmp_path)).eval()(**x)
    untouched = exp.task.build_model(exp.data.num_classes, cfg.seed).eval()(**x)
    assert not torch.allclose(ours, untouched, atol=1e-3)  # the adapter does something
    # ILoRA's init offset (ilora_residual.safetensors) is outside PEFT: a 1e-4-RMS difference
    assert torch.allclose(ours, theirs, atol=atol, rtol=0)
