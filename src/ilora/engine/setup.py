"""Everything a run needs before its first round, built once from a config.

The task's data, its partition over clients, each client's rank, the model with LoRA injected
(placed on ``train.device`` with its ``train.precision``, see ``engine.compute``), and the
algorithm. Both runtimes build the same ``Experiment`` from the same config, so they see
identical clients, data shares and initial weights.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Any

import ilora.algorithms  # noqa: F401  (registers every algorithm)
import ilora.tasks  # noqa: F401  (registers every task)
from ilora.algorithms.base import ALGORITHMS
from ilora.algorithms.base import Algorithm
from ilora.algorithms.base import create_algorithm
from ilora.config import ConfigError
from ilora.config import ExperimentConfig
from ilora.config import algorithm_args
from ilora.engine.personal_validation import local_evals
from ilora.engine.privacy import check_dp
from ilora.engine.robust import check_robust
from ilora.engine.shares import Shares
from ilora.engine.shares import split_local
from ilora.registry import instantiate
from ilora.seeding import np_rng
from ilora.tasks.base import TASKS
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import DataPeek
from ilora.tasks.base import Task
from ilora.tasks.base import TaskData
from ilora.types import ClientInfo

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ilora.engine.headcenter import HeadCenter


@dataclass
class Experiment:
    """A configured run: task data, client shares, clients, the model and the algorithm."""

    cfg: ExperimentConfig
    task: Task
    data: TaskData
    shares: Sequence[ArrayDataset]  # a lazy Shares in a built experiment
    local_tests: Sequence[ArrayDataset]  # own test (validation) shares: personal_validation
    clients: list[ClientInfo]
    model: nn.Module
    algorithm: Algorithm  # type: ignore[type-arg]
    head_center: HeadCenter | None = None  # train.center_head's shift, folded where written


def make_task(name: str, args: dict[str, Any]) -> Task:
    """Return the task ``name`` with its options, checking every option name.

    Raises:
        ConfigError: for an unknown option (with the valid ones) or an invalid value.

    """
    try:
        task: Task = instantiate(TASKS.get(name), args, f"task {name!r} (task_args)")
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return task


@functools.lru_cache(maxsize=2)
def load_data(task: Task) -> TaskData:
    """Return ``task.load()``, cached per task and options (``ilora compare`` reuses it)."""
    return task.load()


def partition(cfg: ExperimentConfig, train: ArrayDataset) -> list[np.ndarray]:
    """Return each client's training indices under ``cfg.data``."""
    return partition_labels(cfg, train.labels.numpy(), train.groups)


def partition_labels(
    cfg: ExperimentConfig, labels: np.ndarray, groups: np.ndarray | None
) -> list[np.ndarray]:
    """Return each client's indices into ``labels`` under ``cfg.data``.

    Raises:
        ConfigError: for bad partitioner arguments or a client left without examples.

    """
    from ilora.data.partitioners import PARTITIONERS  # (NumPy) where data is partitioned

    fn = PARTITIONERS.get(cfg.data.partition)
    try:
        parts = fn(labels, groups, cfg.data.num_clients, cfg.seed, **cfg.data.partition_args)
    except ValueError as err:
        raise ConfigError(f"data.partition {cfg.data.partition!r}: {err}") from None
    for cid, idx in enumerate(parts):
        if len(idx) == 0:
            raise ConfigError(
                f"client {cid} has no training examples; lower data.num_clients "
                "or change data.partition_args"
            )
    return parts


def check_ranks(cfg: ExperimentConfig, alg: Algorithm, ranks: list[int], model: nn.Module) -> None:  # type: ignore[type-arg]
    """Reject ranks no layer can hold and mixed ranks for single-rank algorithms."""
    from ilora.lora.state import adapted

    if len(set(ranks)) > 1 and not alg.heterogeneous_ranks:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} needs one rank for every client, got "
            f"{sorted(set(ranks))}; use lora.rank_policy: uniform or another algorithm"
        )
    for name, layer in adapted(model).items():
        limit = min(layer.d_in, layer.d_out)
        if max(ranks) > limit:
            raise ConfigError(
                f"rank {max(ranks)} exceeds min(d_in, d_out) = {limit} of layer "
                f"{name!r}; lower lora.rank / lora.ranks"
            )


def require_classes(labels: np.ndarray, class_names: tuple[str, ...], source: str) -> None:
    """Refuse training labels that hold fewer than two classes.

    Raises:
        ConfigError: naming ``source``, the one class and the fix.

    """
    import numpy as np

    present = np.unique(labels)
    if len(present) < 2:
        only = repr(class_names[int(present[0])]) if len(present) else "none"
        raise ConfigError(
            f"{source}: the training labels hold one class ({only}); a classifier needs at "
            "least two: add examples of another class"
        )


def check_data(cfg: ExperimentConfig, task: Task) -> None:
    """Check a task's files, classes and partition without a tokenizer or a model.

    Tasks reading user files (``peek``) are read and checked; packaged tasks pass.

    Raises:
        ConfigError: naming the file and the fix.

    """
    peek = getattr(task, "peek", None)
    if peek is None:
        return
    try:
        found: DataPeek = peek()
    except (OSError, ValueError) as err:
        raise ConfigError(str(err)) from None
    require_classes(found.labels, found.class_names, found.source)
    partition_labels(cfg, found.labels, found.groups)


def validate(cfg: ExperimentConfig) -> tuple[Algorithm, Task]:  # type: ignore[type-arg]
    """Return the algorithm and task of ``cfg`` after checking every name and option in it.

    The task's data is checked too (:func:`check_data`), so a bad file is refused here, by
    ``ilora validate`` and before ``ilora run`` loads a model.

    Raises:
        ConfigError: for an unknown algorithm, task, option or ``per_algorithm`` section,
            a ``fed.robust``/``dp`` setting the algorithm's aggregation does not allow, or
            bad data.

    """
    try:
        for name in cfg.per_algorithm:
            ALGORITHMS.get(name)
        alg = create_algorithm(cfg.algorithm, algorithm_args(cfg))
        check_robust(cfg, alg)
        check_dp(cfg, alg, cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed))
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    task = make_task(cfg.task, cfg.task_args)
    check_data(cfg, task)
    return alg, task


def build(cfg: ExperimentConfig) -> Experiment:
    """Build the experiment of ``cfg`` (loads data and the pretrained model).

    Raises:
        ConfigError: for any configuration a user can get wrong.

    """
    from ilora.engine.compute import place
    from ilora.lora.inject import inject

    alg, task = validate(cfg)
    data = with_validation(load_data(task), cfg)  # type: ignore[arg-type]
    require_classes(data.train.labels.numpy(), data.class_names, f"task {cfg.task!r}")
    parts = partition(cfg, data.train)
    ranks = cfg.lora.client_ranks(cfg.data.num_clients, cfg.seed)
    splits = [
        split_local(idx, cfg.data.local_test_fraction, cfg.seed, cid)
        for cid, idx in enumerate(parts)
    ]
    clients = [ClientInfo(cid, ranks[cid], len(train)) for cid, (train, _) in enumerate(splits)]
    model = task.build_model(data.num_classes, cfg.seed)
    targets = cfg.lora.targets or task.lora_targets
    try:
        inject(model, cfg.lora, targets, head=task.head)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_ranks(cfg, alg, ranks, model)
    try:
        place(model, cfg.train.device, cfg.train.precision)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if alg.personalized and cfg.data.local_test_fraction == 0.0:
        raise ConfigError(
            f"algorithm {cfg.algorithm!r} is personalized: its clients are evaluated "
            "on their own test share; set data.local_test_fraction > 0 (e.g. 0.2)"
        )
    shares = Shares(data.train, [train for train, _ in splits])
    centre = centred(cfg, model, shares) if cfg.train.center_head else None
    evals = local_evals(cfg, data, parts, splits)
    return Experiment(cfg, task, data, shares, evals, clients, model, alg, centre)


def centred(cfg: ExperimentConfig, model: nn.Module, shares: Shares) -> HeadCenter:
    """Make ``model``'s head read its input minus the centre of ``train.center_head`` examples.

    Raises:
        ConfigError: if the head has no bias to fold the centre into.

    """
    from ilora.engine.headcenter import center_head  # torch: only where a run is built
    from ilora.engine.headcenter import head_center

    n, batch = cfg.train.center_head, cfg.eval.batch_size
    try:
        return center_head(model, head_center(model, shares, n, cfg.seed, batch))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def with_validation(data: TaskData, cfg: ExperimentConfig) -> TaskData:
    """Return ``data`` with ``data.validation_fraction`` of its training split held out.

    The held-out examples are a fixed seeded share of the task's training split (the same for
    every run seed, like the test split), removed before the partition, so they are disjoint
    from the test split and from every client's share and test share. Under
    ``eval.split: validation`` they replace the test split: the run never reads the test split.
    """
    import numpy as np

    fraction = cfg.data.validation_fraction
    if fraction == 0.0:
        return data
    n = len(data.train)
    n_val = int(round(fraction * n))
    if not 0 < n_val < n:
        raise ConfigError(
            f"data.validation_fraction {fraction} of {n} training examples leaves "
            f"{n_val} for validation; choose a fraction that leaves both sides non-empty"
        )
    order = np_rng(0, "validation-split").permutation(n)
    train = data.train.subset(np.sort(order[n_val:]))
    held_out = data.train.subset(np.sort(order[:n_val]))
    test = held_out if cfg.eval.split == "validation" else data.test
    return replace(data, train=train, test=test)
