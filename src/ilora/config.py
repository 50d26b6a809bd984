"""Experiment configuration: nested dataclasses are the schema; YAML files are instances.

Every field has a default and a help string; ``__post_init__`` validates. Loading is strict: an
unknown key, a wrong type or an out-of-range value raises ``ConfigError`` naming the dotted path
and the fix. ``--set fed.rounds=3`` overrides any dotted path (the value is parsed as YAML).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ilora.lora.spec import LoRASpec


class ConfigError(ValueError):
    """A configuration a user wrote is wrong; the message names the key and the fix."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; this loader reads it as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text, reading scientific notation (``2e-3``) as floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class DataConfig:
    """How the task's training set is split over clients."""

    num_clients: int = field(default=10, metadata={"help": "number of clients"})
    partition: str = field(
        default="dirichlet", metadata={"help": "partitioner (`ilora list partitioners`)"}
    )
    partition_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "arguments of the partitioner, e.g. {alpha: 0.3, min_size: 10}; "
            "dirichlet without them uses {alpha: 0.3}, iid and by_group take none"
        },
    )

    local_test_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of each client's examples held out as its own test set for "
            "personalized evaluation (0 = none; personalized methods need > 0)"
        },
    )

    validation_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of the task's training split held out as validation before the "
            "partition (a fixed seeded split, disjoint from the test split and from the "
            "clients' shares; eval.split: validation evaluates on it); 0 = none"
        },
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

    rounds: int = field(default=10, metadata={"help": "communication rounds"})
    fraction: float = field(default=1.0, metadata={"help": "share of clients sampled per round"})
    weighting: Literal["examples", "uniform"] = field(
        default="examples", metadata={"help": "aggregation weight: local example count | uniform"}
    )
    min_success: int = field(
        default=1,
        metadata={
            "help": "fewest accepted uploads a round needs; fewer stops the run (error); 0: a "
            "round with none keeps the model and the run goes on"
        },
    )
    max_update_norm: float = field(
        default=0.0,
        metadata={"help": "reject an upload whose update norm ‖u − sent‖ exceeds this; 0 = off"},
    )
    clip_update_norm: float = field(
        default=0.0,
        metadata={"help": "scale each accepted update down to this norm (robust); 0 = off"},
    )
    max_weight: float = field(
        default=0.0,
        metadata={
            "help": "reject an upload whose reported weight exceeds this (besides the example "
            "count its client announced when it joined); 0 = that count only"
        },
    )
    robust: Literal["none", "median", "trimmed_mean"] = field(
        default="none",
        metadata={
            "help": "coordinate-wise median or trimmed mean in place of the weighted mean "
            "(only algorithms whose aggregation is a mean, `mean_aggregation`; a refusal names "
            "them)"
        },
    )
    trim_fraction: float = field(
        default=0.1,
        metadata={"help": "trimmed_mean: share of clients dropped at each end, in [0, 0.5)"},
    )
    min_cosine: float = field(
        default=-1.0,
        metadata={
            "help": "reject an accepted update u − sent whose cosine with the coordinate-wise "
            "median of the round's accepted updates is below this (a sign-flipped update); "
            "needs 3 accepted updates; -1 = off"
        },
    )
    stop_on_divergence: bool = field(
        default=False,
        metadata={
            "help": "stop the run (exit code 3) when a round's training loss is not finite or "
            "above 2x the first round's; off: warn once and record diverged: 1 in history.jsonl"
        },
    )
    client_store: Literal["memory", "disk"] = field(
        default="memory",
        metadata={
            "help": "where clients' state lives between rounds (ILoRA-S control variates): "
            "memory, or disk (one safetensors file per client in the run directory's "
            "client-state/, loaded when sampled: for 100,000 clients)"
        },
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

    dropout_before: float = field(default=0.0, metadata={"help": "unreachable: never trains"})
    crash: float = field(default=0.0, metadata={"help": "crashes while training: no upload"})
    straggler: float = field(default=0.0, metadata={"help": "answers after the round deadline"})
    dropout_after: float = field(default=0.0, metadata={"help": "trains, then the upload is lost"})
    nan: float = field(default=0.0, metadata={"help": "uploads a NaN"})
    wrong_keys: float = field(default=0.0, metadata={"help": "uploads a misnamed tensor"})
    wrong_shape: float = field(default=0.0, metadata={"help": "uploads a tensor one row too big"})
    exploding: float = field(default=0.0, metadata={"help": "update multiplied by 1e6"})
    sign_flip: float = field(default=0.0, metadata={"help": "Byzantine: update negated"})
    scale: float = field(default=0.0, metadata={"help": "Byzantine: update times scale_factor"})
    scale_factor: float = field(default=10.0, metadata={"help": "the Byzantine scale"})

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

    clip_norm: float = field(
        default=0.0,
        metadata={"help": "C: each client's update ‖u − sent‖ is clipped to this norm; 0 = off"},
    )
    noise_multiplier: float = field(
        default=0.0,
        metadata={"help": "sigma: Gaussian noise std sigma·C (0 = clipping only, no guarantee)"},
    )
    delta: float = field(default=1e-5, metadata={"help": "delta of the (epsilon, delta) report"})
    noise: Literal["upload", "aggregate"] = field(
        default="upload",
        metadata={
            "help": "upload: every upload carries N(0, (sigma C)^2) (any algorithm); aggregate: "
            "N(0, (sigma C)^2 / m) each, the sum of m carries sigma C (mean aggregation only)"
        },
    )
    reproducible_noise: bool = field(
        default=False,
        metadata={
            "help": "TESTS ONLY: derive the noise and the sampling from the config seed "
            "(anyone holding the config can remove the noise); default: OS entropy"
        },
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


@dataclass(frozen=True)
class TrainConfig:
    """Local training of one client in one round."""

    steps: int = field(default=10, metadata={"help": "local optimizer steps per round"})
    batch_size: int = field(default=32, metadata={"help": "local minibatch size"})
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": "adamw | sgd"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate of the LoRA factors"})
    head_lr: float = field(default=5e-3, metadata={"help": "learning rate of the head"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "decoupled (AdamW) / L2 (SGD) weight decay"}
    )
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "clip the gradient norm; 0 = off"})
    train_head: bool = field(
        default=True,
        metadata={"help": "train the classifier head locally and FedAvg it (every method)"},
    )
    precision: Literal["fp32", "bf16", "auto"] = field(
        default="fp32",
        metadata={
            "help": "compute precision of the model's forward/backward: fp32 | bf16 (autocast; "
            "LoRA factors, optimizer state and uploads stay fp32) | auto (bf16 where the "
            "device has native bf16: AVX-512 BF16/AMX CPUs, bf16 CUDA GPUs; else fp32)"
        },
    )
    device: Literal["cpu", "cuda", "auto"] = field(
        default="cpu",
        metadata={
            "help": "where the model trains and evaluates: cpu | cuda | auto (cuda if visible); "
            "everything sent, received and aggregated stays on the CPU"
        },
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.momentum < 0 or self.max_grad_norm < 0:
            raise ConfigError(
                "train.weight_decay, train.momentum and train.max_grad_norm must be >= 0"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation on the held-out test split (global) and the clients' test shares (personal)."""

    every: int = field(default=1, metadata={"help": "evaluate every N rounds (and after the last)"})
    subset: int = field(
        default=1000,
        metadata={
            "help": "seeded test subset per round (also the total over the clients' shares "
            "for personalized evaluation); 0 = all"
        },
    )
    personal_every: int = field(
        default=1,
        metadata={
            "help": "evaluate the clients' own models every N rounds (and after the last); "
            "each time costs one client_init and one pass over every client's test share"
        },
    )
    final_full: bool = field(
        default=True, metadata={"help": "evaluate on the full test split(s) after the last round"}
    )
    batch_size: int = field(default=256, metadata={"help": "evaluation batch size"})
    split: Literal["test", "validation"] = field(
        default="test",
        metadata={
            "help": "what the global model is evaluated on: test, or the validation split "
            "(data.validation_fraction > 0; for choices such as learning rates, never test)"
        },
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

    tracking_uri: str = field(
        default="",
        metadata={
            "help": "MLflow tracking URI, e.g. file:./mlruns (a local store) or http://host:5000; "
            "empty = off"
        },
    )
    experiment: str = field(default="ilora", metadata={"help": "MLflow experiment name"})

    def __post_init__(self) -> None:
        if self.tracking_uri and not self.experiment:
            raise ConfigError("log.mlflow.experiment must be a non-empty name")


@dataclass(frozen=True)
class LogConfig:
    """Optional experiment tracking of every round's metrics (off by default)."""

    tensorboard: str = field(
        default="",
        metadata={
            "help": "directory for TensorBoard event files, one subdirectory per run "
            "(pip install ilora[tensorboard]); empty = off"
        },
    )
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)


@dataclass(frozen=True)
class ExperimentConfig:
    """One federated run."""

    algorithm: str = field(default="ilora", metadata={"help": "`ilora list algorithms`"})
    algorithm_args: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "the algorithm's hyperparameters"}
    )
    per_algorithm: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "hyperparameters by algorithm name, merged over algorithm_args when that "
            "algorithm runs (one config for `ilora compare`); a `train` mapping inside a "
            "section goes over `train` (e.g. a tuned lr), under --set"
        },
    )
    task: str = field(default="tiny-text", metadata={"help": "`ilora list tasks`"})
    task_args: dict[str, Any] = field(default_factory=dict, metadata={"help": "the task's options"})
    seed: int = field(default=0, metadata={"help": "run seed: partition, inits, sampling, dropout"})
    lora: LoRASpec = field(default_factory=LoRASpec)
    data: DataConfig = field(default_factory=DataConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (the YAML subset we use) and convert it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return build(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in args:
            try:
                return _coerce(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} fits none of {[_type_name(a) for a in args]}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path} must be null")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{path} = {value} is too large for a float") from None
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{path} must be {tp.__name__}, got {value!r}")
        return value
    return value


def build(cls: type[Any], data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types raise).

    Raises:
        ConfigError: naming the dotted path, with a did-you-mean for unknown keys.

    """
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r}{hint} (valid: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        message = str(err)
        raise ConfigError(
            message if message.startswith(path) else f"{path or 'config'}: {message}"
        ) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Return a YAML error in one line: the problem and where (line and column, 1-based)."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if problem is None:
        return " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def set_dotted(data: dict[str, Any], dotted: str, raw: str) -> None:
    """Apply one ``key.path=value`` override to a nested mapping (value parsed as YAML)."""
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {p!r} is not a section")
        node = child
    try:
        node[last] = parse_yaml(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"--set {dotted}: {raw!r} is not a YAML value ({_yaml_problem(err)})"
        ) from None


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``k=v`` overrides.

    Raises:
        ConfigError: for a missing file, bad YAML, an unknown key or an invalid value.

    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {str(p)!r} is a directory; give a YAML file")
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            loaded = parse_yaml(p.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(p)!r} cannot be read: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"config file {str(p)!r} is not valid YAML: {_yaml_problem(err)}"
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        data = _with_includes(loaded, p.parent)
    data = _with_overrides(_with_own_training(_with_overrides(data, overrides), data), overrides)
    cfg: ExperimentConfig = build(ExperimentConfig, data)
    if cfg.eval.split == "validation" and cfg.data.validation_fraction == 0.0:
        raise ConfigError(
            "eval.split: validation needs a validation split; set data.validation_fraction "
            "(e.g. 0.1)"
        )
    return cfg


def _with_includes(
    data: dict[str, Any], base: Path, seen: frozenset[Path] = frozenset()
) -> dict[str, Any]:
    """Return ``data`` merged over the files its top-level ``include`` names (relative paths).

    ``include: PATH`` (or a list) reads each file as a config fragment, deep-merged under the
    including file (the including file wins), e.g. the tuned learning rates that
    ``ilora bench protocol --phase tune`` writes as ``per_algorithm: {name: {train: {lr}}}``.
    The resolved config (what ``config.yaml`` stores) holds the merged values, not the ``include``.
    """
    names = data.pop("include", None)
    if names is None:
        return data
    merged: dict[str, Any] = {}
    for name in [names] if isinstance(names, str) else list(names):
        path = (base / str(name)).resolve()
        if not path.is_file():
            raise ConfigError(f"include {str(path)!r}: no such file")
        if path in seen:
            raise ConfigError(f"include {str(path)!r} includes itself; remove the cycle")
        fragment = parse_yaml(path.read_text(encoding="utf-8")) or {}
        if not isinstance(fragment, dict):
            raise ConfigError(f"include {str(path)!r} must hold a mapping at the top level")
        merged = _deep_merge(merged, _with_includes(fragment, path.parent, seen | {path}))
    return _deep_merge(merged, data)


def _deep_merge(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Return ``under`` updated by ``over``, mappings merged key by key."""
    out = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _with_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with the ``key.path=value`` overrides applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key.path=value, got {item!r}")
        set_dotted(out, key.strip(), raw)
    return out


def _with_own_training(resolved: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with the running algorithm's ``per_algorithm.<name>.train`` merged in.

    ``resolved`` (``data`` with the overrides) names the algorithm; the section goes over the
    file's ``train`` and under the overrides, so ``--set train.lr=...`` still wins. Every
    ``train`` section is then dropped from ``per_algorithm``: the resolved config (and so a
    stored ``config.yaml``) depends only on the running algorithm's own rate.
    """
    name = resolved.get("algorithm", ExperimentConfig.algorithm)
    sections = resolved.get("per_algorithm") or {}
    own = sections.get(name) if isinstance(sections, dict) and isinstance(name, str) else None
    train = own.get("train", {}) if isinstance(own, dict) else {}
    if not isinstance(train, dict):
        raise ConfigError(f"per_algorithm.{name}.train must be a mapping, got {train!r}")
    out = copy.deepcopy(data)
    if train:
        out["train"] = {**(out.get("train") or {}), **train}
    for section in (out.get("per_algorithm") or {}).values():
        if isinstance(section, dict):  # consumed: the resolved config keeps only cfg.train
            section.pop("train", None)
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Return a plain YAML-ready mapping of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def algorithm_args(cfg: ExperimentConfig) -> dict[str, Any]:
    """Return the hyperparameters of ``cfg.algorithm``: ``algorithm_args`` and its section."""
    own = cfg.per_algorithm.get(cfg.algorithm, {})
    if not isinstance(own, dict):
        raise ConfigError(f"per_algorithm.{cfg.algorithm} must be a mapping, got {own!r}")
    hyper = {k: v for k, v in own.items() if k != "train"}  # train: merged into cfg.train
    return {**cfg.algorithm_args, **hyper}
