"""Image exports: PEFT's 4-D conv factors onto the MobileNetV2 base, and the merged state dict.

Both are loaded with the code their README documents (peft plus ILoRA's model class) and give
the project's logits to 1e-5.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from export_fixtures import trainer  # noqa: F401  (fixtures)
from safetensors.torch import load_file
from typer.testing import CliRunner

from ilora.cli import app
from ilora.models.mobilenet_v2 import ImageClassifier
from ilora.models.mobilenet_v2 import mobilenet_v2_features


def _npz(path: Path) -> str:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    y = np.arange(40) % 3
    np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    return str(path)


def _export(run: Path, fmt: str) -> Path:
    result = CliRunner().invoke(app, ["export", str(run), "--format", fmt])
    assert result.exit_code == 0, result.output
    return run / f"export-{fmt}"


def _peft_model(dest: Path) -> torch.nn.Module:  # the code of the export's README
    from peft import PeftModel  # imported here: every xdist worker collects this module

    meta = json.loads((dest / "ilora_export.json").read_text())
    seed = meta["seed"]
    features = mobilenet_v2_features(meta["pretrained"], seed)
    model = ImageClassifier(features, meta["num_classes"], seed)
    if meta["folded_layers"]:
        model.load_state_dict(load_file(meta["base_model_name_or_path"]))
    return PeftModel.from_pretrained(model, str(dest)).eval()


@pytest.mark.assets
@pytest.mark.parametrize(
    ("algorithm", "center"), [("fedit", 0), ("ilora", 0), ("fedit", 16), ("ilora", 16)]
)
def test_image_exports_match_the_project_logits(
    algorithm: str, center: int, tmp_path: Path, trainer: Callable[..., Any]
) -> None:
    """``center``: ``train.center_head``; the exported head has ``b - W c`` in it."""
    args = {"path": _npz(tmp_path / "x.npz"), "image_size": 16, "pretrained": True}
    done = trainer(tmp_path / "run", "image-npz", args, algorithm, f"train.center_head={center}")

    peft_dir = _export(done.run, "peft")
    factors = load_file(str(peft_dir / "adapter_model.safetensors"))
    conv = [t for k, t in factors.items() if k.endswith("lora_A.weight") and t.dim() == 4]
    assert conv and all(t.shape[2:] == (1, 1) for t in conv)
    with torch.no_grad():
        theirs = _peft_model(peft_dir)(pixels=done.inputs["pixels"])
    torch.testing.assert_close(theirs, done.logits, atol=1e-5, rtol=0)

    merged_dir = _export(done.run, "merged")
    meta = json.loads((merged_dir / "ilora_export.json").read_text())
    model = ImageClassifier(mobilenet_v2_features(False, 0), meta["num_classes"], 0)
    model.load_state_dict(load_file(str(merged_dir / "model.safetensors")))
    with torch.no_grad():
        merged = model.eval()(pixels=done.inputs["pixels"])
    torch.testing.assert_close(merged, done.logits, atol=1e-5, rtol=0)
    assert meta["id2label"] == {"0": "0", "1": "1", "2": "2"}
