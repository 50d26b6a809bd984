"""The comparison protocol: tune every method on validation, find the horizon, compare over seeds.

Three phases per task, each resumable (finished runs of the identical config are reused, see
:mod:`ilora.bench.jobs`), each reading its preset ``<preset_dir>/<task>.yaml``:

1. **tune** (``ilora bench protocol --phase tune``): every variant at every rate of a log grid
   (:mod:`ilora.bench.tuning`), at the tuning setting (``tune_ranks``, ``tune_alpha``: by
   default heterogeneous ranks, alpha 0.1; fixed, whatever ranks and alphas are compared) and
   the tuning seed, evaluated on the validation split (``eval.split: validation``: the test
   split is never read). The grid is extended while a variant's best rate sits at its edge.
   The chosen rates go to ``<tuned_dir>/<task>.yaml`` as ``per_algorithm: {name: {train:
   {lr}}}``, which presets and the demo ``include``.
2. **horizon** (first step of ``compare``): the centralized line and the best federated
   method (a variant without arguments: an ablation never moves the horizon) at their tuned
   rates for ``max_rounds`` on validation, in the tuning setting; the comparison runs for the
   later of their plateau rounds (``max_rounds`` when one never plateaus; the report says so).
3. **compare** (``--phase compare``): every variant at its tuned rate, every rank setting,
   alpha and seed, for the horizon, evaluated on test (every ``compare_every`` rounds for the
   curves, and in full after the last round: the compared number). The centralized line
   trains on pooled data, so it runs once per rank setting and seed (at the tuning alpha,
   whichever alphas an invocation compares) and stands for every alpha.

Run directories: ``<runs>/<task>/{tune,horizon,compare}<suffix>/``, where ``suffix`` is empty
for the default tuning setting and ``-<ranks>-a<alpha>`` for another one (``tuning_suffix``;
the tuned-rates file is ``<task><suffix>.yaml``), so the runs of a protocol tuned elsewhere
never replace those of the default one, and any subset of the compared axes resumes from the
same tuning and horizon runs. Each decided run's text is also kept in ``records`` (committed
with the result files) and restored from there, so a fresh clone resumes too
(:mod:`ilora.bench.runrecords`).

A variant is a registered algorithm with hyperparameters, ``name`` or
``name+key=value+key=value`` (ablations such as ``ilora+redistribute=svd``); the variant's label
names its runs and rows.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from ilora.bench import tuning
from ilora.bench.jobs import Job

CENTRALIZED = "centralized"
TUNE_RANKS, TUNE_ALPHA = "heterogeneous", 0.1  # the default tuning setting (every run so far)
RANKS: dict[str, tuple[str, ...]] = {
    "heterogeneous": ("lora.rank_policy=cycle", "lora.ranks=[4,8,16]"),
    "homogeneous": ("lora.rank_policy=uniform", "lora.rank=8"),
}


def check_rank_settings(ranks: Sequence[str], settings: Mapping[str, object]) -> None:
    """Raise ``ValueError`` naming the ``ranks`` that are not keys of ``settings``."""
    unknown = [r for r in ranks if r not in settings]
    if unknown:
        raise ValueError(f"unknown rank setting(s) {unknown}; choose from {', '.join(settings)}")


def check_presets(tasks: Sequence[str], preset: Callable[[str], Path], examples: str) -> None:
    """Raise ``FileNotFoundError`` for the first task whose ``preset(task)`` file is missing.

    ``examples`` is the folder of the committed presets the message points to.
    """
    for task in tasks:
        if not preset(task).is_file():
            raise FileNotFoundError(
                f"no preset {preset(task)} for task {task!r}; write one (see {examples}) "
                "or pass --preset DIR"
            )


@dataclass(frozen=True)
class Variant:
    """A method as compared: a registered algorithm plus hyperparameters over its defaults."""

    label: str
    algorithm: str
    args: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Variant:
        """Return the variant ``name`` or ``name+key=value+...``."""
        name, *pairs = text.strip().split("+")
        args = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"variant {text!r}: write name+key=value, got {pair!r}")
            args.append((key, value))
        return cls(text.strip(), name, tuple(args))

    @property
    def personalized(self) -> bool:
        """Whether the method's clients keep models of their own (scored on those)."""
        import ilora.algorithms  # noqa: F401  (registers every algorithm)
        from ilora.algorithms.base import ALGORITHMS

        return bool(ALGORITHMS.get(self.algorithm).personalized)

    @property
    def metric(self) -> str:
        """Return the validation metric the rate is chosen on (see ``tuning.score``)."""
        return "personal_accuracy" if self.personalized else "accuracy"

    def overrides(self) -> tuple[str, ...]:
        own = (f"per_algorithm.{self.algorithm}.{k}={v}" for k, v in self.args)
        return (f"algorithm={self.algorithm}", *own)


@dataclass(frozen=True)
class Protocol:
    """The axes of the protocol and where its presets, runs and tuned rates live."""

    tasks: tuple[str, ...]
    variants: tuple[Variant, ...]
    preset_dir: Path
    runs: Path
    tuned_dir: Path
    ranks: tuple[str, ...] = ("heterogeneous", "homogeneous")
    alphas: tuple[float, ...] = (0.1, 0.5)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    tune_seed: int = 100  # not an evaluation seed: the choice is not fitted to compared runs
    low_rate: float = 10**-4.5
    n_rates: int = 6
    max_rounds: int = 60
    compare_every: int = 6  # test evaluations of a comparison run: every N rounds and the last
    extra: tuple[str, ...] = field(default=())  # further --set overrides for every run
    tune_ranks: str = TUNE_RANKS  # the setting of the tuning and horizon runs
    tune_alpha: float = TUNE_ALPHA
    records: Path | None = None  # where each decided run's text is kept (``runrecords``)

    def __post_init__(self) -> None:
        check_rank_settings((*self.ranks, self.tune_ranks), RANKS)
        if self.n_rates < 1 or not self.seeds or not self.alphas:
            raise ValueError("the protocol needs at least one rate, seed and alpha")
        if not self.tune_alpha > 0:
            raise ValueError(f"--tune-alpha must be > 0, got {self.tune_alpha}")
        check_presets(self.tasks, self.preset, "configs/protocol/")

    def preset(self, task: str) -> Path:
        return self.preset_dir / f"{task}.yaml"

    def keep(self, _k: int, job: Job) -> None:
        """Keep the record of ``job``'s decided run in :attr:`records` (none: do nothing).

        The ``on_done`` of ``run_jobs``: called as each run ends (``_k``: its count).
        """
        if self.records is not None:
            from ilora.bench import runrecords

            runrecords.keep(job.run_dir, self.runs, self.records)

    @property
    def tuning_suffix(self) -> str:
        """Return what names the tuning setting in run directories ("" for the default one)."""
        if (self.tune_ranks, self.tune_alpha) == (TUNE_RANKS, TUNE_ALPHA):
            return ""
        return f"-{self.tune_ranks}-a{self.tune_alpha:g}"

    @property
    def tuning_words(self) -> str:
        """Return the tuning setting in words, e.g. "heterogeneous alpha 0.1"."""
        return f"{self.tune_ranks} alpha {self.tune_alpha:g}"

    def phase_dir(self, task: str, phase: str) -> Path:
        """Return the directory of ``phase``'s (tune, horizon, compare) runs of ``task``."""
        return self.runs / task / f"{phase}{self.tuning_suffix}"

    def tuned_file(self, task: str) -> Path:
        return self.tuned_dir / f"{task}{self.tuning_suffix}.yaml"

    def check_rates(self, task: str, rates: Mapping[str, float]) -> None:
        """Raise :meth:`untuned` for the variants ``rates`` has no rate for."""
        missing = [v.label for v in self.variants if v.label not in rates]
        if missing:
            raise self.untuned(task, dict.fromkeys(missing, "not tuned"))

    def untuned(self, task: str, missing: Mapping[str, str]) -> ValueError:
        """Return the error naming the variants without a tuned rate (label -> what is missing)."""
        what = ", ".join(f"{label!r} ({why})" for label, why in missing.items())
        plain = [label for label in missing if label != CENTRALIZED]
        options = f" --tune-ranks {self.tune_ranks} --tune-alpha {self.tune_alpha:g}"
        command = (
            f"ilora bench protocol --phase tune --tasks {task}"
            + (f" --variants {','.join(plain)}" if plain else "")
            + (options if self.tuning_suffix else "")
        )
        return ValueError(
            f"{task}: no tuned rate for {what} at {self.tuning_words}: run `{command}` first"
        )

    def _setting(self, ranks: str, alpha: float) -> tuple[str, ...]:
        return (*RANKS[ranks], f"data.partition_args.alpha={alpha}")

    def tune_job(self, task: str, variant: Variant, rate: float) -> Job:
        """Return the tuning run of ``variant`` at ``rate`` (validation only)."""
        sets = (
            *variant.overrides(),
            *self._setting(self.tune_ranks, self.tune_alpha),
            f"seed={self.tune_seed}",
            f"train.lr={rate}",
            "eval.split=validation",
            *self._personal_evaluations(task, variant),
            *self.extra,
        )
        where = self.phase_dir(task, "tune") / variant.label / tuning.run_name(rate)
        return Job(f"{task} tune {variant.label} lr={rate:g}", self.preset(task), sets, where)

    def _personal_evaluations(self, task: str, variant: Variant) -> tuple[str, ...]:
        """Evaluate a personalized method's clients as often as the global model."""
        if not variant.personalized:
            return ()
        from ilora import config as config_mod

        every = config_mod.load(self.preset(task), list(self.extra)).eval.every
        return (f"eval.personal_every={every}",)

    def horizon_job(self, task: str, variant: Variant, rate: float) -> Job:
        """Return the long validation run of ``variant`` at its tuned rate."""
        sets = (
            *self.tune_job(task, variant, rate).overrides,
            f"fed.rounds={self.max_rounds}",
        )
        where = self.phase_dir(task, "horizon") / variant.label
        return Job(f"{task} horizon {variant.label}", self.preset(task), sets, where)

    def compare_jobs(self, task: str, rates: dict[str, float], rounds: int) -> Iterator[Job]:
        """Yield the comparison runs of ``task``: settings, seeds, variants (test split)."""
        return (job for _, job in self.compare_runs(task, rates, rounds))

    def compare_runs(
        self, task: str, rates: dict[str, float], rounds: int
    ) -> Iterator[tuple[Variant, Job]]:
        """Yield :meth:`compare_jobs` with the variant each one runs."""
        self.check_rates(task, rates)
        # pooled data: one centralized run, at the tuning alpha, stands for every alpha; it
        # runs with that alpha's runs, or with the first alpha's when that one is not compared
        home = self.tune_alpha if self.tune_alpha in self.alphas else self.alphas[0]
        for ranks in self.ranks:
            for alpha in self.alphas:
                for seed in self.seeds:
                    for variant in self.variants:
                        central = variant.algorithm == CENTRALIZED
                        if central and alpha != home:
                            continue
                        at = self.tune_alpha if central else alpha
                        job = self._compare_job(task, variant, ranks, at, seed, rates, rounds)
                        yield variant, job

    def _compare_job(
        self,
        task: str,
        variant: Variant,
        ranks: str,
        alpha: float,
        seed: int,
        rates: dict[str, float],
        rounds: int,
    ) -> Job:
        sets = (
            *variant.overrides(),
            *self._setting(ranks, alpha),
            f"seed={seed}",
            f"train.lr={rates[variant.label]}",
            f"fed.rounds={rounds}",
            f"eval.every={self.compare_every}",
            *self.extra,
        )
        setting = self.phase_dir(task, "compare") / f"{ranks}-a{alpha:g}"
        where = setting / f"{variant.label}-seed{seed}"
        label = f"{task} {ranks} a={alpha:g} seed {seed} {variant.label}"
        return Job(label, self.preset(task), sets, where)


def parse_variants(text: str) -> tuple[Variant, ...]:
    """Return the variants of a comma-separated list (the centralized line always included)."""
    variants = [Variant.parse(v) for v in text.split(",") if v.strip()]
    if CENTRALIZED not in {v.label for v in variants}:
        variants.append(Variant(CENTRALIZED, CENTRALIZED))
    return tuple(variants)


def federated(variants: Sequence[Variant]) -> list[Variant]:
    return [v for v in variants if v.algorithm != CENTRALIZED]
