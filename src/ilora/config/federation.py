"""The federated sections of a config: the data split, the schedule, injected faults and DP."""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from ilora.config.fields import option
from ilora.config.yaml_text import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """How the task's training set is split over clients."""

    num_clients: int = option(10, "number of clients")
    partition: str = option("dirichlet", "partitioner (`ilora list partitioners`)")
    partition_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "arguments of the partitioner, e.g. {alpha: 0.3, min_size: 10}; "
            "dirichlet without them uses {alpha: 0.3}, iid and by_group take none"
        },
    )

    local_test_fraction: float = option(
        0.0,
        "share of each client's examples held out as its own test set for "
        "personalized evaluation (0 = none; personalized methods need > 0)",
    )

    validation_fraction: float = option(
        0.0,
        "share of the task's training split held out as validation before the "
        "partition (a fixed seeded split, disjoint from the test split and from the "
        "clients' shares; eval.split: validation evaluates on it); 0 = none",
    )

    def __post_init__(self) -> None:
        if self.partition == "dirichlet" and not self.partition_args:
            object.__setattr__(self, "partition_args", {"alpha": 0.3})  # its documented default
        if self.num_clients < 1:
            raise ConfigError(f"data.num_clients must be >= 1, got {self.num_clients}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(
                f"data.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if not 0.0 <= self.local_test_fraction < 1.0:
            raise ConfigError(
                f"data.local_test_fraction must be in [0, 1), got {self.local_test_fraction}"
            )


@dataclass(frozen=True)
class FedConfig:
    """The federated schedule."""

    rounds: int = option(10, "communication rounds")
    fraction: float = option(1.0, "share of clients sampled per round")
    weighting: Literal["examples", "uniform"] = option(
        "examples", "aggregation weight: local example count | uniform"
    )
    min_success: int = option(
        1,
        "fewest accepted uploads a round needs; fewer stops the run (error); 0: a "
        "round with none keeps the model and the run goes on",
    )
    max_update_norm: float = option(
        0.0, "reject an upload whose update norm ‖u − sent‖ exceeds this; 0 = off"
    )
    clip_update_norm: float = option(
        0.0, "scale each accepted update down to this norm (robust); 0 = off"
    )
    max_weight: float = option(
        0.0,
        "reject an upload whose reported weight exceeds this (besides the example "
        "count its client announced when it joined); 0 = that count only",
    )
    robust: Literal["none", "median", "trimmed_mean"] = option(
        "none",
        "coordinate-wise median or trimmed mean in place of the weighted mean "
        "(only algorithms whose aggregation is a mean, `mean_aggregation`; a refusal names "
        "them)",
    )
    trim_fraction: float = option(
        0.1, "trimmed_mean: share of clients dropped at each end, in [0, 0.5)"
    )
    min_cosine: float = option(
        -1.0,
        "reject an accepted update u − sent whose cosine with the coordinate-wise "
        "median of the round's accepted updates is below this (a sign-flipped update); "
        "needs 3 accepted updates; -1 = off",
    )
    stop_on_divergence: bool = option(
        False,
        "stop the run (exit code 3) when a round's training loss is not finite or "
        "above 2x the first round's; off: warn once and record diverged: 1 in history.jsonl",
    )
    client_store: Literal["memory", "disk"] = option(
        "memory",
        "where clients' state lives between rounds (ILoRA-S control variates): "
        "memory, or disk (one safetensors file per client in the run directory's "
        "client-state/, loaded when sampled: for 100,000 clients)",
    )

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"fed.rounds must be >= 1, got {self.rounds}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fed.fraction must be in (0, 1], got {self.fraction}")
        if self.min_success < 0:
            raise ConfigError(f"fed.min_success must be >= 0, got {self.min_success}")
        for name in ("max_update_norm", "clip_update_norm", "max_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"fed.{name} must be a finite number >= 0 (0 = off), got {value}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ConfigError(f"fed.trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if not -1.0 <= self.min_cosine < 1.0:
            raise ConfigError(f"fed.min_cosine must be in [-1, 1) (-1: off), got {self.min_cosine}")


FAULT_KINDS = (
    "dropout_before",
    "crash",
    "straggler",
    "dropout_after",
    "nan",
    "wrong_keys",
    "wrong_shape",
    "exploding",
    "sign_flip",
    "scale",
)


@dataclass(frozen=True)
class FaultConfig:
    """Seeded fault injection: the chance that a sampled client suffers each fault in a round.

    At most one fault per client and round; the probabilities must sum to at most 1.
    """

    dropout_before: float = option(0.0, "unreachable: never trains")
    crash: float = option(0.0, "crashes while training: no upload")
    straggler: float = option(0.0, "answers after the round deadline")
    dropout_after: float = option(0.0, "trains, then the upload is lost")
    nan: float = option(0.0, "uploads a NaN")
    wrong_keys: float = option(0.0, "uploads a misnamed tensor")
    wrong_shape: float = option(0.0, "uploads a tensor one row too big")
    exploding: float = option(0.0, "update multiplied by 1e6")
    sign_flip: float = option(0.0, "Byzantine: update negated")
    scale: float = option(0.0, "Byzantine: update times scale_factor")
    scale_factor: float = option(10.0, "the Byzantine scale")

    def __post_init__(self) -> None:
        for name in FAULT_KINDS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"faults.{name} must be a probability in [0, 1], got {p}")
        total = sum(getattr(self, name) for name in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"faults: the probabilities sum to {total:g}; they must sum to <= 1")
        if not math.isfinite(self.scale_factor):
            raise ConfigError(f"faults.scale_factor must be finite, got {self.scale_factor}")


@dataclass(frozen=True)
class DPConfig:
    """Client-level differential privacy: clip each update, add Gaussian noise, account.

    On when ``clip_norm > 0``. See ``ilora.engine.privacy`` for the mechanism and its analysis.
    """

    clip_norm: float = option(
        0.0, "C: each client's update ‖u − sent‖ is clipped to this norm; 0 = off"
    )
    noise_multiplier: float = option(
        0.0, "sigma: Gaussian noise std sigma·C (0 = clipping only, no guarantee)"
    )
    delta: float = option(1e-5, "delta of the (epsilon, delta) report")
    noise: Literal["upload", "aggregate"] = option(
        "upload",
        "upload: every upload carries N(0, (sigma C)^2) (any algorithm); aggregate: "
        "N(0, (sigma C)^2 / m) each, the sum of m carries sigma C (mean aggregation only)",
    )
    reproducible_noise: bool = option(
        False,
        "TESTS ONLY: derive the noise and the sampling from the config seed "
        "(anyone holding the config can remove the noise); default: OS entropy",
    )

    def __post_init__(self) -> None:
        for name in ("clip_norm", "noise_multiplier"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"dp.{name} must be a finite number >= 0, got {value}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"dp.delta must be in (0, 1), got {self.delta}")
        if self.noise_multiplier > 0 and self.clip_norm == 0:
            raise ConfigError(
                "dp.noise_multiplier > 0 needs dp.clip_norm > 0 (the noise is sigma times C)"
            )

    @property
    def enabled(self) -> bool:
        """Return True when updates are clipped (and noised) for privacy."""
        return self.clip_norm > 0
