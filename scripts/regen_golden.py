"""The only writer of tests/golden/*.json (run on request: `python scripts/regen_golden.py`).

It records the per-round curve of `configs/smoke.yaml` (2 rounds) for every algorithm that the
golden test checks, single-threaded as the test suite runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ilora import config
from ilora.engine.simulation import run

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("fedit", "ilora", "ilora-s", "centralized")
KEYS = ("train_loss", "loss", "accuracy", "agg_error")


def curve(algorithm: str) -> list[dict[str, float]]:
    cfg = config.load(ROOT / "configs" / "smoke.yaml", [f"algorithm={algorithm}"])
    records = run(cfg).history.records
    return [{k: r.metrics[k] for k in KEYS if k in r.metrics} for r in records]


def main() -> None:
    torch.set_num_threads(1)
    golden = {name: curve(name) for name in ALGORITHMS}
    out = ROOT / "tests" / "golden" / "smoke.json"
    out.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
