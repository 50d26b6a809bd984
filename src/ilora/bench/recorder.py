"""Update norms ``‖u − sent‖`` of a run, recorded around its algorithm without changing the run.

The DP campaign picks its clip norm from them (:func:`update_norms`); the fault campaign
writes them beside every run (``update_norms.csv``), the evidence for its clip threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ilora import config
from ilora.engine.setup import build
from ilora.engine.simulation import run
from ilora.engine.validation import update_norm
from ilora.tensors import canonical
from ilora.types import ClientContext
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


class NormRecorder:
    """Wraps an algorithm and records update norms; the run itself is unchanged.

    ``produced``: ``(round, cid, ‖u − sent‖)`` of every upload a client's ``upload`` hook
    returns; ``norms``: the same for every upload that reaches ``aggregate`` (accepted).
    """

    def __init__(self, alg: Any) -> None:
        self._alg = alg
        self.sent: dict[int, TensorDict] = {}
        self.norms: list[tuple[int, int, float]] = []
        self.produced: list[tuple[int, int, float]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._alg, name)

    def upload(
        self, trained: TensorDict, ctx: ClientContext, cstate: TensorDict
    ) -> tuple[Upload, TensorDict]:
        """Run the algorithm's ``upload`` and record the norm of what it produced."""
        up, new_state = self._alg.upload(trained, ctx, cstate)
        sent = canonical(ctx.payload.tensors, torch.float32)
        norm = update_norm(canonical(up.tensors, torch.float32), sent)
        self.produced.append((ctx.rnd.round, ctx.client.cid, norm))
        return up, new_state

    def download(self, state: Any, client: ClientInfo, rnd: RoundInfo) -> Payload:
        """Run the algorithm's ``download`` and keep what each client was sent."""
        payload: Payload = self._alg.download(state, client, rnd)
        self.sent[client.cid] = payload.tensors
        return payload

    def aggregate(self, state: Any, uploads: Mapping[int, Upload], rnd: RoundInfo) -> Any:
        """Record the norm of every accepted upload, then run the algorithm's ``aggregate``."""
        for cid in sorted(uploads):
            norm = update_norm(uploads[cid].tensors, self.sent[cid])
            self.norms.append((rnd.round, cid, norm))
        return self._alg.aggregate(state, uploads, rnd)


def update_norms(cfg: config.ExperimentConfig) -> list[tuple[int, int, float]]:
    """Return ``(round, cid, ‖u − sent‖)`` of every accepted upload of a run of ``cfg``."""
    exp = build(cfg)
    recorder = NormRecorder(exp.algorithm)
    exp.algorithm = recorder  # type: ignore[assignment]
    run(cfg, exp=exp)
    return recorder.norms
