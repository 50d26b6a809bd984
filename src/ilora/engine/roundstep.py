"""The round step: everything between the clients' replies and the next round, for both runtimes.

A runtime (the embedded engine's ``simulation.run``, the Flower ``AlgorithmStrategy``) only
takes the round's sample from :meth:`RoundStep.sample`, sends the downloads and collects the
server-checked uploads (:class:`Collected`); then it calls, in this order, and nothing else for
these concerns:

1. :meth:`RoundStep.aggregate`: the direction screen (``turn.screen_round``), the
   ``fed.min_success`` policy (:class:`RoundFailedError`), aggregation under ``fed.robust``
   (skipped, keeping the state, when no upload was accepted under ``fed.min_success: 0``), the
   round's metrics (the algorithm's ``round_metrics`` except ``agg_error``, our ``agg_error``
   of ``engine.diagnostics``, ``train_loss``, the privacy accountant's ``epsilon``), the
   divergence guard and, under injected faults, the counts per fault kind over the round's
   actual sample (``engine.faults.round_counts``);
2. when :meth:`RoundStep.personal_due`, the clients' views of the next round
   (:class:`ClientView`: each client's own start, its metrics on its test share and its dense
   changes), gathered in process (``evaluation.embedded_views``) or by ``evaluate`` messages;
3. :meth:`RoundStep.finish`: personal metrics and ``download_error`` from the views, the
   global evaluation, the round record, the ``on_round`` callback and the checkpoint.

Under private sampling (DP noise) records name no client (``sampling.published_events``);
accountings after the run read their counts, never a sample rebuilt from ``cfg.seed``.

Health checks (``engine.guards``): the divergence guard on ``train_loss`` against the first
round's ``start_loss`` (``diverged: 1`` in the record; ``fed.stop_on_divergence`` stops the run
with :class:`DivergenceError`, exit code 3, its last checkpoint the previous round's) and the
one-class check on the global evaluation (``top_prediction_share``); each warns once a run.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ilora.engine import faults
from ilora.engine import robust
from ilora.engine.checkpoint import Checkpoint
from ilora.engine.diagnostics import agg_error
from ilora.engine.diagnostics import dense_changes
from ilora.engine.diagnostics import download_error
from ilora.engine.diagnostics import valid_changes
from ilora.engine.evaluation import ClientView
from ilora.engine.evaluation import eval_subset
from ilora.engine.evaluation import evaluate_global
from ilora.engine.evaluation import weighted_average
from ilora.engine.guards import Guards
from ilora.engine.history import History
from ilora.engine.history import RoundRecord
from ilora.engine.privacy import privacy_metrics
from ilora.engine.sampling import published_events
from ilora.engine.sampling import sample_clients
from ilora.engine.sampling import sampling_seed
from ilora.engine.setup import Experiment
from ilora.engine.turn import screen_round
from ilora.lora.state import base_weights
from ilora.lora.state import load_setup
from ilora.types import ClientInfo
from ilora.types import Payload
from ilora.types import RoundInfo
from ilora.types import TensorDict
from ilora.types import Upload


class RoundFailedError(RuntimeError):
    """The run cannot go on (too few accepted uploads, or a divergence under the stop option).

    With ``fed.min_success: 0`` a round may end with no accepted upload: the server skips
    ``aggregate`` and keeps its state, and the round is recorded (``succeeded: 0``).
    """


class DivergenceError(RoundFailedError):
    """The training loss diverged and ``fed.stop_on_divergence`` is set."""


@dataclass
class Collected:
    """What a runtime gathered in one round, before the round step."""

    sampled: int
    uploads: dict[int, Upload]  # accepted by turn.server_check, by client id
    sent: dict[int, Payload]  # what each of them was sent
    events: list[dict[str, Any]]
    up: int
    down: int


@dataclass(frozen=True)
class OpenRound:
    """A round between :meth:`RoundStep.aggregate` and :meth:`RoundStep.finish`."""

    round: int
    started: float  # time.perf_counter() at the round's start
    got: Collected
    accepted: int  # uploads aggregated
    events: list[dict[str, Any]]  # lost, rejected and screened-out updates
    metrics: dict[str, float]
    faults: dict[str, list[int]]  # kind -> [injected, failed, rejected, accepted]


def check_success(
    r: int, sampled: int, accepted: int, events: list[dict[str, Any]], min_success: int, hint: str
) -> None:
    """Raise :class:`RoundFailedError` if fewer than ``min_success`` uploads were accepted."""
    if accepted >= min_success:
        return
    named = ((e.get("cid", "(private)"), e["outcome"], e["reason"]) for e in events)
    reasons = "; ".join(f"client {c} {outcome}: {why}" for c, outcome, why in named)
    raise RoundFailedError(
        f"round {r}: {accepted} of {sampled} sampled clients delivered an accepted update, "
        f"fewer than fed.min_success = {min_success} ({reasons}); {hint}"
    )


class RoundStep:
    """The round step of one run (module docstring).

    Args:
        exp: the experiment (the server's model, test data and clients).
        clients: the clients the runtime trains (one pooled client for ``pooled_data``).
        history: the run's history (records of a resumed run included).
        on_round: called with every round's record.
        on_checkpoint: called with the run's state after every round (not after a round that
            stops the run).
        resume_command: how the user resumes this run, for the failure message.
        sample_seed: the sampling seed a checkpoint kept, None for a fresh run (then a secret
            in DP runs, :func:`ilora.engine.sampling.sampling_seed`).

    """

    def __init__(
        self,
        exp: Experiment,
        clients: Sequence[ClientInfo],
        history: History,
        on_round: Callable[[RoundRecord], None] | None = None,
        on_checkpoint: Callable[[Checkpoint], None] | None = None,
        resume_command: str = "ilora run --resume DIR",
        sample_seed: int | None = None,
    ) -> None:
        self.exp, self.cfg, self.alg, self.history = exp, exp.cfg, exp.algorithm, history
        self.clients, self.resume_command = list(clients), resume_command
        self.on_round, self.on_checkpoint = on_round, on_checkpoint
        self.sample_seed = sampling_seed(self.cfg, sample_seed)
        self.subset = eval_subset(exp.data.test, self.cfg.eval.subset, self.cfg.seed)
        self.base = base_weights(exp.model)  # frozen views: W0 of download_error
        self.saved = history.records[-1].round if history.records and on_checkpoint else None
        starts = [r.metrics["start_loss"] for r in history.records if "start_loss" in r.metrics]
        self.guards = Guards(self.cfg, self.alg, starts[0] if starts else None)
        self.before: TensorDict | None = None  # dense changes of the global model, last round
        self.pending: OpenRound  # set by aggregate, read by finish

    def sample(self, r: int) -> list[int]:
        """Return the sorted client ids round ``r`` samples (every round: the pooled client)."""
        fraction = 1.0 if self.alg.pooled_data else self.cfg.fed.fraction
        return sample_clients(range(len(self.clients)), fraction, self.sample_seed, r)

    # ---- 1. aggregation
    def aggregate(self, r: int, started: float, state: Any, got: Collected) -> Any:
        """Screen, check, aggregate and measure round ``r``; return the new server state."""
        cfg = self.cfg
        uploads, screened = screen_round(cfg, got.uploads, got.sent, self.clients)
        events = got.events + screened
        counts = faults.round_counts(cfg.faults, cfg.seed, r, self.sample(r), events)
        events = published_events(cfg, events)
        check_success(r, got.sampled, len(uploads), events, cfg.fed.min_success, self.hint())
        metrics: dict[str, float] = {}
        if uploads:  # none only under fed.min_success 0: then the round keeps the server state
            before = self.global_changes(state) if self.before is None else self.before
            state = robust.aggregate(cfg, self.alg, state, uploads, RoundInfo(r, cfg.seed))
            own = self.alg.round_metrics(state)
            metrics.update({k: v for k, v in own.items() if k != "agg_error"})
            self.before = self.global_changes(state)
            metrics.update(self._agg_error(before, self.before, uploads))
            metrics.update(self._losses(r, uploads))
        metrics.update(privacy_metrics(cfg, r))
        self.pending = OpenRound(r, started, got, len(uploads), events, metrics, counts)
        return state

    def global_changes(self, state: Any) -> TensorDict:
        """Return the dense changes of the exported global model (loaded into the model)."""
        load_setup(self.exp.model, self.alg.export(state))
        return dense_changes(self.exp.model)

    def _agg_error(
        self, before: TensorDict, after: TensorDict, uploads: Mapping[int, Upload]
    ) -> dict[str, float]:
        changes = {c: u.diagnostics for c, u in uploads.items()}
        if not all(valid_changes(ch, before) for ch in changes.values()):
            return {}  # under DP (no diagnostics) or an unusable diagnostic: not measured
        weights = {c: float(u.weight) for c, u in uploads.items()}
        return {"agg_error": agg_error(before, after, changes, weights)}

    def _losses(self, r: int, uploads: Mapping[int, Upload]) -> dict[str, float]:
        """Return ``train_loss``, ``start_loss`` and the divergence guard's verdict."""
        out = {}
        for key in ("train_loss", "start_loss"):
            values = [u.metrics[key] for u in uploads.values() if key in u.metrics]
            if values:
                out[key] = sum(values) / len(values)
        return {**out, **self.guards.losses(r, out)}

    # ---- 2. and 3. the clients' views, evaluation, record, checkpoint
    def personal_due(self, r: int) -> tuple[bool, bool]:
        """Return whether round ``r`` gathers the clients' views, and on their full test shares."""
        full = self.cfg.eval.final_full and r == self.cfg.fed.rounds
        return self.cfg.eval.due(r, self.cfg.fed.rounds)[1], full

    def view_cids(self, sampled: Sequence[int]) -> list[int]:
        """Return the clients whose views a due round gathers.

        Every client when they hold test shares (personalized accuracy is over all of them);
        otherwise only the round's sampled clients, so that ``download_error`` (their next
        start against the global model) costs O(sampled), not O(registered clients).
        """
        if self.cfg.data.local_test_fraction > 0:
            return [c.cid for c in self.exp.clients]
        return sorted(sampled)

    def finish(
        self, state: Any, views: list[ClientView] | None, store: Mapping[int, TensorDict]
    ) -> RoundRecord:
        """Record the round opened by :meth:`aggregate` (``views`` None when not due)."""
        r, got, metrics = self.pending.round, self.pending.got, self.pending.metrics
        if views is not None:
            metrics.update(self._views_metrics(state, views))
        if self.cfg.eval.due(r, self.cfg.fed.rounds)[0]:
            metrics.update(self.global_metrics(state))
            self.guards.predictions(r, metrics)
        record = self.history.close_round(
            r,
            self.pending.started,
            (got.up, got.down),
            got.sampled,
            self.pending.accepted,
            metrics,
            self.pending.events,
            self.pending.faults,
        )
        if self.on_round is not None:
            self.on_round(record)
        if metrics.get("diverged") and self.cfg.fed.stop_on_divergence:
            loss = metrics["train_loss"]
            raise DivergenceError(f"{self.guards.divergence_message(r, loss)}; {self.hint()}")
        if self.on_checkpoint is not None:
            records, rng = list(self.history.records), torch.get_rng_state()
            states, index = snapshot(store)
            ckpt = Checkpoint(r, state, states, records, rng, self.sample_seed, index)
            self.on_checkpoint(ckpt)
            self.saved = r
        return record

    def _views_metrics(self, state: Any, views: list[ClientView]) -> dict[str, float]:
        out = weighted_average([(v.metrics, v.examples) for v in views if v.examples])
        glob = self.global_changes(state)
        changes = {v.cid: v.changes for v in views if valid_changes(v.changes, glob)}
        if changes and len(changes) == len(views):
            out["download_error"] = download_error(self.base, glob, changes)
        return out

    def global_metrics(self, state: Any, full: bool = False) -> dict[str, float]:
        """Return the exported global model on the test subset (``full``: the whole test split)."""
        load_setup(self.exp.model, self.alg.export(state))
        data = self.exp.data.test if full else self.subset
        return evaluate_global(self.exp.model, data, self.cfg.eval.batch_size)

    def hint(self) -> str:
        """Return where a failed run resumes from (a checkpoint that exists, or none)."""
        if self.saved is None:
            return "no checkpoint was written yet: start the run again"
        return f"the checkpoint of round {self.saved} is intact ({self.resume_command})"


def snapshot(
    store: Mapping[int, TensorDict],
) -> tuple[dict[int, TensorDict], dict[str, Any] | None]:
    """Return a client store's checkpoint part: its states, or the disk store's file index."""
    take = getattr(store, "checkpoint", None)  # engine.clientstore's stores
    return take() if callable(take) else (dict(store), None)
