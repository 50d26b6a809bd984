"""The local sections of a config: a client's training, evaluation and run logging."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Literal

from ilora.config.fields import option
from ilora.config.yaml_text import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Local training of one client in one round."""

    steps: int = option(10, "local optimizer steps per round")
    batch_size: int = option(32, "local minibatch size")
    optimizer: Literal["adamw", "sgd"] = option("adamw", "adamw | sgd")
    lr: float = option(2e-3, "learning rate of the LoRA factors")
    head_lr: float = option(5e-3, "learning rate of the head")
    weight_decay: float = option(0.0, "decoupled (AdamW) / L2 (SGD) weight decay")
    momentum: float = option(0.0, "SGD momentum")
    max_grad_norm: float = option(0.0, "clip the gradient norm; 0 = off")
    train_head: bool = option(
        True, "train the classifier head locally and FedAvg it (every method)"
    )
    center_head: int = option(
        0,
        "centre the head's input: subtract the frozen backbone's mean head input over this "
        "many seeded examples of the clients' training data, fixed before round 1 (a "
        "reparametrisation of the head's bias, every method alike; ours); 0 = off",
    )
    precision: Literal["fp32", "bf16", "auto"] = option(
        "fp32",
        "compute precision of the model's forward/backward: fp32 | bf16 (autocast; "
        "LoRA factors, optimizer state and uploads stay fp32) | auto (bf16 where the "
        "device has native bf16: AVX-512 BF16/AMX CPUs, bf16 CUDA GPUs; else fp32)",
    )
    device: Literal["cpu", "cuda", "auto"] = option(
        "cpu",
        "where the model trains and evaluates: cpu | cuda | auto (cuda if visible); "
        "everything sent, received and aggregated stays on the CPU",
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")
        if min(self.weight_decay, self.momentum, self.max_grad_norm, self.center_head) < 0:
            raise ConfigError(
                "train.weight_decay, train.momentum, train.max_grad_norm and "
                "train.center_head must be >= 0"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on the held-out test split (global) and the clients' test shares (personal)."""

    every: int = option(1, "evaluate every N rounds (and after the last)")
    subset: int = option(
        1000,
        "seeded test subset per round (also the total over the clients' shares "
        "for personalized evaluation); 0 = all",
    )
    personal_every: int = option(
        1,
        "evaluate the clients' own models every N rounds (and after the last); "
        "each time costs one client_init and one pass over every client's test share",
    )
    final_full: bool = option(True, "evaluate on the full test split(s) after the last round")
    batch_size: int = option(256, "evaluation batch size")
    split: Literal["test", "validation"] = option(
        "test",
        "what the global model is evaluated on: test, or the validation split "
        "(data.validation_fraction > 0; for choices such as learning rates, never test)",
    )

    def __post_init__(self) -> None:
        if min(self.every, self.personal_every, self.batch_size) < 1 or self.subset < 0:
            raise ConfigError(
                "eval.every, eval.personal_every and eval.batch_size must be >= 1 and "
                "eval.subset >= 0"
            )

    def due(self, r: int, rounds: int) -> tuple[bool, bool]:
        """Return whether round ``r`` of ``rounds`` evaluates the global and the clients' models."""
        last = r == rounds
        return r % self.every == 0 or last, r % self.personal_every == 0 or last


@dataclass(frozen=True)
class MLflowConfig:
    """MLflow tracking of a run (``pip install ilora[mlflow]``); on when ``tracking_uri`` is set."""

    tracking_uri: str = option(
        "",
        "MLflow tracking URI, e.g. file:./mlruns (a local store) or http://host:5000; empty = off",
    )
    experiment: str = option("ilora", "MLflow experiment name")

    def __post_init__(self) -> None:
        if self.tracking_uri and not self.experiment:
            raise ConfigError("log.mlflow.experiment must be a non-empty name")


@dataclass(frozen=True)
class LogConfig:
    """Optional experiment tracking of every round's metrics (off by default)."""

    tensorboard: str = option(
        "",
        "directory for TensorBoard event files, one subdirectory per run "
        "(pip install ilora[tensorboard]); empty = off",
    )
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
