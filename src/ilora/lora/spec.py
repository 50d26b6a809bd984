"""``LoRASpec``: the one owner of LoRA targets, ranks, alpha and scaling.

Algorithms never redeclare alpha or ranks: they read ``spec.scale(r)`` and ``ClientInfo.rank``.
Per-client ranks come from a policy:

* ``uniform``: every client gets ``rank``;
* ``explicit``: ``ranks[i]`` for client ``i`` (one entry per client);
* ``cycle``: ``ranks[i % len(ranks)]`` (ranks {2,4,8,16} over 10 clients: 2,4,8,16,2,4,...);
* ``tiers``: resource tiers; client ``i`` falls in tier ``j`` with probability
  ``tier_fractions[j]`` (a seeded draw) and gets ``ranks[j]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from ilora.seeding import np_rng

RankPolicy = Literal["uniform", "explicit", "cycle", "tiers"]
InitKind = Literal["kaiming", "gaussian"]


@dataclass(frozen=True)
class LoRASpec:
    """Where LoRA goes and how it is scaled."""

    targets: tuple[str, ...] = field(
        default=(),
        metadata={"help": "regexes of module names to adapt; empty = the task's default"},
    )
    rank: int = field(default=8, metadata={"help": "rank of every client under policy 'uniform'"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha; scaling is alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input, as PEFT"})
    rslora: bool = field(default=False, metadata={"help": "rsLoRA scaling alpha/sqrt(r)"})
    alpha_scales_with_rank: bool = field(
        default=False,
        metadata={
            "help": "alpha_k = alpha*r_k/rank, so the scaling is alpha/rank for every rank "
            "(FLoRA's choice: its code sets lora_alpha = 2*r)"
        },
    )
    init: InitKind = field(
        default="kaiming", metadata={"help": "init of A: kaiming (PEFT) | gaussian"}
    )
    rank_policy: RankPolicy = field(
        default="uniform", metadata={"help": "uniform | explicit | cycle | tiers"}
    )
    ranks: tuple[int, ...] = field(default=(), metadata={"help": "ranks for the policy"})
    tier_fractions: tuple[float, ...] = field(
        default=(), metadata={"help": "share of clients per tier (policy 'tiers')"}
    )

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if any(r < 1 for r in self.ranks):
            raise ValueError(f"lora.ranks must all be >= 1, got {list(self.ranks)}")
        if self.rank_policy != "uniform" and not self.ranks:
            raise ValueError(f"lora.rank_policy {self.rank_policy!r} needs lora.ranks (a list)")
        if self.rank_policy == "tiers":
            fr = self.tier_fractions
            if (
                len(fr) != len(self.ranks)
                or any(f < 0 for f in fr)
                or not math.isclose(sum(fr), 1.0)
            ):
                raise ValueError(
                    "lora.tier_fractions must give one non-negative share per entry of lora.ranks, "
                    f"summing to 1; got {list(fr)} for ranks {list(self.ranks)}"
                )

    def scale(self, r: int) -> float:
        """Return the LoRA scaling of a rank-``r`` adapter (``alpha_r / r`` or ``/ sqrt(r)``)."""
        alpha = self.alpha * r / self.rank if self.alpha_scales_with_rank else self.alpha
        return alpha / math.sqrt(r) if self.rslora else alpha / r

    def client_ranks(self, num_clients: int, seed: int) -> list[int]:
        """Return the rank of each client ``0..num_clients-1`` under the policy.

        Raises:
            ValueError: if policy ``explicit`` has not exactly one rank per client.

        """
        if self.rank_policy == "uniform":
            return [self.rank] * num_clients
        if self.rank_policy == "explicit":
            if len(self.ranks) != num_clients:
                raise ValueError(
                    f"lora.rank_policy 'explicit' needs one rank per client: {num_clients} "
                    f"clients, {len(self.ranks)} ranks; use 'cycle' to repeat a list"
                )
            return list(self.ranks)
        if self.rank_policy == "cycle":
            return [self.ranks[i % len(self.ranks)] for i in range(num_clients)]
        tiers = np_rng(seed, "rank-tiers").choice(
            len(self.ranks), size=num_clients, p=self.tier_fractions
        )
        return [self.ranks[int(t)] for t in tiers]
