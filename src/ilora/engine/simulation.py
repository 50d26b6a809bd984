"""The embedded engine: one process, one frozen base model, per-client adapters swapped in and out.

``run(cfg)`` builds the experiment and runs ``fed.rounds`` rounds of: sample clients, download,
``client_round`` each (sequentially, on the one model), canonicalize and weight the uploads,
aggregate, evaluate the exported global model on a fixed seeded test subset. Reruns with the same
config are bitwise identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ilora.config import ExperimentConfig
from ilora.engine import robust
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.clientstore import KEEP, open_store
from ilora.engine.evaluation import evaluate, weighted_average
from ilora.engine.history import History, RoundRecord
from ilora.engine.local import make_context
from ilora.engine.privacy import privacy_metrics
from ilora.engine.sampling import num_sampled, sample_clients
from ilora.engine.setup import Experiment, build, total_size
from ilora.engine.turn import canonical_payload, client_turn, screen_round
from ilora.engine.turn import canonical_upload as canonical_upload  # re-exported
from ilora.engine.validation import layer_shapes
from ilora.lora.state import load_setup, template
from ilora.seeding import derive_seed, generator
from ilora.tasks.base import ArrayDataset
from ilora.types import ClientInfo, LocalSetup, Payload, RoundInfo, TensorDict, Upload

RoundCallback = Callable[[RoundRecord], None]
CheckpointCallback = Callable[[Checkpoint], None]


@dataclass
class RunResult:
    """A finished run: its history, the final global model's setup and the server state."""

    history: History
    setup: LocalSetup
    state: Any


def eval_subset(test: ArrayDataset, size: int, seed: int) -> ArrayDataset:
    """Return the fixed seeded test subset used every round (all of it when ``size`` is 0)."""
    if size == 0 or size >= len(test):
        return test
    idx = torch.randperm(len(test), generator=generator(seed, "eval-subset"))[:size]
    return test.subset(idx.sort().values.numpy())


class RoundFailedError(RuntimeError):
    """Fewer accepted uploads in a round than ``fed.min_success``: the run stops.

    With ``fed.min_success: 0`` a round may end with no accepted upload: the server skips
    ``aggregate`` and keeps its state, and the round is recorded (``succeeded: 0``).
    """


def check_success(
    rnd: int,
    sampled: int,
    uploads: Mapping[int, Upload],
    events: list[dict[str, Any]],
    min_success: int,
) -> None:
    """Raise :class:`RoundFailedError` if fewer than ``min_success`` uploads were accepted."""
    if len(uploads) >= min_success:
        return
    reasons = "; ".join(f"client {e['cid']} {e['outcome']}: {e['reason']}" for e in events)
    raise RoundFailedError(
        f"round {rnd}: {len(uploads)} of {sampled} sampled clients delivered an accepted update, "
        f"fewer than fed.min_success = {min_success} ({reasons}); the last checkpoint is intact "
        "(ilora run --resume DIR)"
    )


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


def personal_tests(exp: Experiment, full: bool) -> Sequence[ArrayDataset]:
    """Return the clients' test shares, or seeded subsets totalling about ``eval.subset``.

    Each client keeps ``round(subset · n_k / Σ n)`` (at least 1) of its ``n_k`` test examples,
    the same ones every round; ``full`` (the final evaluation) or ``eval.subset: 0`` keeps all.
    """
    tests, size = exp.local_tests, exp.cfg.eval.subset
    total = total_size(tests)
    if full or size == 0 or size >= total:
        return tests
    return [
        eval_subset(t, max(1, round(size * len(t) / total)), derive_seed(exp.cfg.seed, cid))
        for cid, t in enumerate(tests)
    ]


def personal_metrics(
    exp: Experiment, state: Any, store: Mapping[int, TensorDict], rnd: RoundInfo, full: bool = True
) -> dict[str, float]:
    """Return each client's own model on its own test share, example-weighted (DESIGN §8).

    A client's model is what it would start the next round with: ``client_init`` of its
    download and its state, without training. The pooled (centralized) model is the global one.
    ``full=False`` evaluates the per-round subsets of :func:`personal_tests`.
    """
    tests = personal_tests(exp, full)
    if total_size(tests) == 0:
        return {}
    alg, model, cfg = exp.algorithm, exp.model, exp.cfg
    results = []
    for client, test in zip(exp.clients, tests, strict=True):
        if alg.pooled_data:
            load_setup(model, alg.export(state))
        else:
            payload = canonical_payload(alg.download(state, client, rnd))
            ctx = make_context(model, payload, client, rnd, cfg.lora, cfg.train)
            load_setup(model, alg.client_init(ctx, store.get(client.cid, {}))[0])
        results.append((evaluate(model, test, cfg.eval.batch_size), len(test)))
    return weighted_average(results)


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
    fraction = 1.0 if alg.pooled_data else cfg.fed.fraction
    history = History(cfg.algorithm, cfg.task)
    if resume is None:
        state = alg.server_init(template(model), clients, cfg.lora, cfg.seed)
    else:
        state = resume.state
        history.records.extend(resume.records)
        torch.set_rng_state(resume.rng)
    store = open_store(
        cfg.fed.client_store,
        store_dir,
        resume.store if resume else None,
        resume.store_index if resume else None,
        keep=KEEP if on_checkpoint is not None else 0,
    )
    subset = eval_subset(exp.data.test, cfg.eval.subset, cfg.seed)
    shapes = layer_shapes(template(model))
    for r in range(len(history.records) + 1, cfg.fed.rounds + 1):
        t0, rnd = time.perf_counter(), RoundInfo(r, cfg.seed)
        uploads: dict[int, Upload] = {}
        sent: dict[int, Payload] = {}
        events: list[dict[str, Any]] = []
        down = up = 0
        sampled = sample_clients(range(len(clients)), fraction, cfg.seed, r)  # cid = index
        for cid in sampled:
            turn = client_turn(
                cfg, alg, model, state, store[cid], clients[cid], shares[cid], rnd, train, shapes
            )
            store[cid], down, up = turn.cstate, down + turn.down, up + turn.up
            if turn.upload is not None and turn.payload is not None:
                uploads[cid], sent[cid] = turn.upload, turn.payload
            if turn.event is not None:
                events.append(turn.event)
        uploads, screened = screen_round(cfg, uploads, sent, clients)
        events += screened
        check_success(r, len(sampled), uploads, events, cfg.fed.min_success)
        metrics: dict[str, float] = {}
        if uploads:  # none only under fed.min_success 0: then the round keeps the server state
            state = robust.aggregate(cfg, alg, state, uploads, rnd)
            metrics = dict(alg.round_metrics(state))
            losses = [u.metrics["train_loss"] for u in uploads.values()]
            metrics["train_loss"] = sum(losses) / len(losses)
        metrics.update(privacy_metrics(cfg, r))
        global_due, personal_due = cfg.eval.due(r, cfg.fed.rounds)
        full = cfg.eval.final_full and r == cfg.fed.rounds
        if personal_due:
            metrics.update(personal_metrics(exp, state, store, RoundInfo(r + 1, cfg.seed), full))
        if global_due:
            load_setup(model, alg.export(state))
            metrics.update(evaluate(model, subset, cfg.eval.batch_size))
        record = history.close_round(r, t0, (up, down), len(sampled), len(uploads), metrics, events)
        if on_round is not None:
            on_round(record)
        if on_checkpoint is not None:
            rng = torch.get_rng_state()
            states, index = store.checkpoint()
            ckpt = Checkpoint(r, state, states, list(history.records), rng, index)
            on_checkpoint(ckpt)
    setup = alg.export(state)
    if cfg.eval.final_full:
        load_setup(model, setup)
        history.final = evaluate(model, exp.data.test, cfg.eval.batch_size)
    return RunResult(history, setup, state)
