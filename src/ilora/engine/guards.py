"""Run health: a training loss that climbs, and a global model that predicts one class.

Two warnings the round step prints, each once a run, on stderr; both signals are also recorded
every round in ``history.jsonl`` so a reader can tell a passing spike from a lasting fault.

* **Loss** (``diverged``): ``start_loss`` is the mean over the accepted uploads of each client's
  loss on its first local batch; the first round's is the run's reference ``L0`` (about
  ``ln C`` for C classes at the pretrained model). A round whose ``train_loss`` is not finite
  or above ``DIVERGENCE_FACTOR · L0`` records ``diverged: 1``; with
  ``fed.stop_on_divergence`` the round step then stops the run (``DivergenceError``, exit
  code 3), its last checkpoint the previous round's.
* **One class** (``top_prediction_share``, :func:`ilora.engine.evaluation.evaluate_global`):
  the share of the evaluated examples (test split, or validation under ``eval.split``) that
  the global model assigns to the class it predicts most. At 1.0 the model calls every
  example the same class, whatever its input: its accuracy is that class's share of the
  evaluated split, while its training loss can look healthy (every client fits its own
  majority label), which the loss guard cannot see. For a personalized method (its clients'
  own models are its result, ``personal_accuracy``) the message says the global model is a
  summary.

Either can be a rate that is too high, or a round whose sampled clients hold labels unlike the
rounds before (strong label skew, e.g. Dirichlet α ≤ 0.1 with few clients a round), from
which the next rounds recover; the messages say both and how to tell them apart.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from ilora.algorithms.ilora import ILoRA
from ilora.config import ExperimentConfig

DIVERGENCE_FACTOR = 2.0  # train_loss above this times the first round's start_loss: diverged
ONE_CLASS = 1.0  # top_prediction_share at which the global model predicts a single class


@dataclass
class Guards:
    """The run's two health checks (module docstring); ``start_loss`` is ``L0`` once known."""

    cfg: ExperimentConfig
    alg: Any
    start_loss: float | None = None
    warned: set[str] = field(default_factory=set)

    def losses(self, r: int, out: dict[str, float]) -> dict[str, float]:
        """Return ``{"diverged": 1.0}`` when round ``r``'s ``train_loss`` diverged, else ``{}``."""
        if self.start_loss is None and math.isfinite(out.get("start_loss", math.nan)):
            self.start_loss = out["start_loss"]
        loss, start = out["train_loss"], self.start_loss
        if math.isfinite(loss) and (start is None or loss <= DIVERGENCE_FACTOR * start):
            return {}
        if "loss" not in self.warned or self.cfg.fed.stop_on_divergence:
            self._warn("loss", self.divergence_message(r, loss))
        return {"diverged": 1.0}

    def predictions(self, r: int, metrics: dict[str, float]) -> None:
        """Warn (once a run) when the global model evaluated in round ``r`` predicts one class."""
        if metrics.get("top_prediction_share", 0.0) < ONE_CLASS or "class" in self.warned:
            return
        text = (
            f"{self.cfg.algorithm}'s global model predicts one class for every evaluated example "
            f"in round {r} (accuracy {metrics['accuracy']:.1%}, that class's share); "
        )
        if getattr(self.alg, "personalized", False):
            text += (
                "it is a summary of a personalized method, whose result is each client's own "
                "model (personal_accuracy); "
            )
        self._warn("class", text + f"{self._rate()}. {self._recovery('top_prediction_share < 1')}")

    def divergence_message(self, r: int, loss: float) -> str:
        """Return the one-line explanation of a diverged round ``r``."""
        first = "" if self.start_loss is None else f" (at the start: {self.start_loss:.4g})"
        text = f"{self.cfg.algorithm} diverged in round {r}: training loss {loss:.4g}{first}; "
        text += self._rate()
        if isinstance(self.alg, ILoRA) and self.alg.init == "qr":
            text += (
                " (ILoRA's orthonormal B puts all of the update's magnitude in A, so each "
                "AdamW step moves the layer outputs more than plain LoRA's at the same rate)"
            )
        return f"{text}. {self._recovery('diverged absent')}"

    def _rate(self) -> str:
        train = self.cfg.train
        return (
            f"if it lasts, lower train.lr (now {train.lr:g}) or train.head_lr (now "
            f"{train.head_lr:g}), for instance to a third"
        )

    @staticmethod
    def _recovery(sign: str) -> str:
        return (
            "If the next rounds of history.jsonl recover (" + sign + "), it was this round's "
            "clients, whose labels differ from the rounds before (strong label skew), not the rate"
        )

    def _warn(self, kind: str, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)
        self.warned.add(kind)
