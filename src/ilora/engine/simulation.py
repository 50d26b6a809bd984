"""The embedded engine: one process, one frozen base model, per-client adapters swapped in and out.

``run(cfg)`` builds the experiment and runs ``fed.rounds`` rounds of: sample clients, download,
``client_round`` each (sequentially, on the one model), then the round step
(``engine.roundstep``: screening, aggregation, metrics, evaluation, record, checkpoint), the
same one the Flower runtime calls. Reruns with the same config are bitwise identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ilora.config import ExperimentConfig
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.clientstore import KEEP
from ilora.engine.clientstore import ClientStore
from ilora.engine.clientstore import open_store
from ilora.engine.evaluation import embedded_views
from ilora.engine.evaluation import eval_subset as eval_subset  # re-exported
from ilora.engine.evaluation import personal_tests as personal_tests  # re-exported
from ilora.engine.headcenter import HeadCenter
from ilora.engine.history import History
from ilora.engine.history import RoundRecord
from ilora.engine.roundstep import Collected
from ilora.engine.roundstep import DivergenceError as DivergenceError  # re-exported
from ilora.engine.roundstep import RoundFailedError as RoundFailedError  # re-exported
from ilora.engine.roundstep import RoundStep
from ilora.engine.sampling import num_sampled
from ilora.engine.setup import Experiment
from ilora.engine.setup import build
from ilora.engine.turn import canonical_payload as canonical_payload  # re-exported
from ilora.engine.turn import canonical_upload as canonical_upload  # re-exported
from ilora.engine.turn import client_turn
from ilora.engine.validation import layer_shapes
from ilora.lora.state import template
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo
from ilora.types import LocalSetup
from ilora.types import RoundInfo

RoundCallback = Callable[[RoundRecord], None]
CheckpointCallback = Callable[[Checkpoint], None]


@dataclass
class RunResult:
    """A finished run: its history, the final global model's setup and the server state.

    ``head_center``: the experiment's ``train.center_head`` shift (``setup``'s head reads its
    input minus it), folded into the head where the model is written (``save_adapter``).
    """

    history: History
    setup: LocalSetup
    state: Any
    head_center: HeadCenter | None = None


def run_clients(exp: Experiment) -> tuple[list[ClientInfo], Sequence[ArrayDataset], int]:
    """Return the clients the engine trains, their data, and local steps per round.

    A ``pooled_data`` algorithm (centralized) trains one client holding every example, at the
    largest rank, for as many steps as all sampled clients of a federated round together.
    """
    cfg = exp.cfg
    if not exp.algorithm.pooled_data:
        return exp.clients, exp.shares, cfg.train.steps
    pooled = exp.data.train
    rank = max(c.rank for c in exp.clients)
    steps = cfg.train.steps * num_sampled(len(exp.clients), cfg.fed.fraction)
    return [ClientInfo(0, rank, len(pooled))], [pooled], steps


def _start(
    exp: Experiment,
    clients: Sequence[ClientInfo],
    history: History,
    resume: Checkpoint | None,
    store_dir: Path | None,
    checkpoints: bool,
) -> tuple[Any, ClientStore]:
    """Return the server state and the client store to start from: fresh, or the checkpoint's.

    Resuming also puts the checkpoint's rounds in ``history`` and restores torch's RNG; the
    store keeps the states checkpoints need when ``checkpoints`` is set.
    """
    cfg = exp.cfg
    if resume is None:
        state = exp.algorithm.server_init(template(exp.model), clients, cfg.lora, cfg.seed)
    else:
        state = resume.state
        history.records.extend(resume.records)
        torch.set_rng_state(resume.rng)
    store = open_store(
        cfg.fed.client_store,
        store_dir,
        resume.store if resume else None,
        resume.store_index if resume else None,
        keep=KEEP if checkpoints else 0,
    )
    return state, store


def run(
    cfg: ExperimentConfig,
    on_round: RoundCallback | None = None,
    exp: Experiment | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    resume: Checkpoint | None = None,
    store_dir: Path | None = None,
) -> RunResult:
    """Run one federated experiment on the embedded engine and return its result.

    ``on_checkpoint`` receives the run's whole state after every round (serialize it before
    returning: the engine keeps mutating the client store); ``resume`` continues a run from
    such a checkpoint, with a result bitwise identical to the uninterrupted run's.
    ``store_dir`` holds the client states under ``fed.client_store: disk`` (a temporary
    directory when None: such a run cannot be resumed).
    """
    exp = exp or build(cfg)
    alg, model = exp.algorithm, exp.model
    clients, shares, steps = run_clients(exp)
    train = replace(cfg.train, steps=steps)
    history = History(cfg.algorithm, cfg.task)
    state, store = _start(exp, clients, history, resume, store_dir, on_checkpoint is not None)
    kept = None if resume is None else resume.sample_seed
    step = RoundStep(exp, clients, history, on_round, on_checkpoint, sample_seed=kept)
    shapes = layer_shapes(template(model))
    for r in range(len(history.records) + 1, cfg.fed.rounds + 1):
        t0, rnd = time.perf_counter(), RoundInfo(r, cfg.seed)
        sampled = step.sample(r)  # cid = index
        got = Collected(len(sampled), {}, {}, [], 0, 0)
        for cid in sampled:
            turn = client_turn(
                cfg, alg, model, state, store[cid], clients[cid], shares[cid], rnd, train, shapes
            )
            store[cid], got.down, got.up = turn.cstate, got.down + turn.down, got.up + turn.up
            if turn.upload is not None and turn.payload is not None:
                got.uploads[cid], got.sent[cid] = turn.upload, turn.payload
            if turn.event is not None:
                got.events.append(turn.event)
        state = step.aggregate(r, t0, state, got)
        due, full = step.personal_due(r)
        mine = embedded_views(exp, store, step.view_cids(sampled))
        views = mine(state, RoundInfo(r + 1, cfg.seed), full) if due else None
        step.finish(state, views, store)
    if cfg.eval.final_full:
        history.final = step.global_metrics(state, full=True)
    return RunResult(history, alg.export(state), state, exp.head_center)
