"""``peak_extra`` in a process started with the tracking environment sees torch's allocations."""

from __future__ import annotations

import json
import subprocess
import sys

from ilora.bench.memory import worker_env

CHILD = """
import json, torch
from ilora.bench.memory import peak_extra
def alloc():
    x = torch.ones(1024, 1024, dtype=torch.float64)  # 8 MiB, touched
    return float(x.sum())
_, extra = peak_extra(alloc)
_, none = peak_extra(lambda: 1 + 1)
print(json.dumps({"extra": extra, "none": none}))
"""


def test_a_temporary_tensor_counts_and_an_empty_call_does_not() -> None:
    res = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=worker_env(1),
        timeout=120, check=True,
    )  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    assert got["extra"] >= 8 * mib
    assert got["none"] < mib
