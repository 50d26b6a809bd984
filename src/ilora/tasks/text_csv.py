"""The ``text-csv`` task: bring your own text classification CSV (and optionally your encoder).

The encoder defaults to the packaged all-MiniLM-L6-v2 (found with ``importlib.metadata`` like the
built-in text tasks); ``model_dir`` names any local Hugging Face encoder instead. Class ids are
the sorted distinct labels (numerically when they are all integers); the run directory keeps the
mapping in ``labels.json``. :meth:`TextCSV.peek` checks the files without a tokenizer or model.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING
from typing import ClassVar

import numpy as np

from ilora.config.fields import option
from ilora.models.targets import default_target_modules
from ilora.models.targets import name_patterns
from ilora.seeding import np_rng
from ilora.tasks._text_data import SPACE_RE
from ilora.tasks._text_data import numbered
from ilora.tasks._text_data import seeded_subsets
from ilora.tasks._text_data import split_stratified
from ilora.tasks._text_data import tokenized_dataset
from ilora.tasks.base import DataPeek
from ilora.tasks.base import TaskData
from ilora.tasks.csv_table import check_labels
from ilora.tasks.csv_table import read_user_csv
from ilora.tasks.csv_table import split_flags
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bounds
from ilora.tasks.options import option_error
from ilora.tasks.text_common import BERT_HEAD
from ilora.tasks.text_common import BERT_LORA_TARGETS
from ilora.tasks.text_common import MAX_POSITIONS
from ilora.tasks.text_common import encoder_model
from ilora.tasks.text_common import resolve_encoder_dir

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TextCSV"]

_Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Table:
    """The rows of the CSV(s) as class ids, with the train and test row indices."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    groups: np.ndarray | None  # (N,) int64
    train_idx: np.ndarray
    test_idx: np.ndarray


@dataclass(frozen=True)
class TextCSV:
    """Your own text classification CSV on the packaged MiniLM or a local encoder directory."""

    path: str = field(metadata={"help": "CSV file with a text and a label column"})
    model_dir: str = option(
        "", "local Hugging Face encoder dir ('' = the packaged all-MiniLM-L6-v2)"
    )
    text_column: str = option("text", "column holding the text")
    label_column: str = option("label", "column holding the class")
    group_column: str = option("", "optional column of natural groups for by_group ('' = none)")
    split_column: str = option("", "optional column marking each row 'train' or 'test' ('' = none)")
    test_path: str = option(
        "", "test CSV ('' = split_column, else a seeded stratified split of path)"
    )
    test_fraction: float = option(0.2, "test share of the seeded split (0 < f < 1)")
    encoding: str = option("utf-8", "text encoding of the CSV files (e.g. latin-1)")
    target_modules: tuple[str, ...] = option(
        (),
        "LoRA targets as PEFT names them: modules whose name is or ends with "
        "one of these ([] = the query/value projections of the model type)",
    )
    max_len: int = bounded(64, "tokens per text", 2, MAX_POSITIONS)
    max_train: int = bounded(0, "seeded train subset, 0 = all", 0)
    max_test: int = bounded(0, "seeded test subset, 0 = all", 0)
    num_layers: int = bounded(0, "keep the first n layers, 0 = all", 0)
    split_seed: int = bounded(0, "seed of split and subsets", 0)

    name: ClassVar[str] = "text-csv"
    head: ClassVar[tuple[str, ...]] = BERT_HEAD

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Regexes of the LoRA targets: ``target_modules`` or the model type's defaults."""
        if self.target_modules:
            return name_patterns(self.target_modules)
        if not self.model_dir:
            return BERT_LORA_TARGETS  # the packaged MiniLM
        return name_patterns(default_target_modules(Path(self.model_dir)))

    def __post_init__(self) -> None:
        for name in ("path", "text_column", "label_column", "encoding"):
            if not getattr(self, name):
                raise option_error(self, name, "empty but required", "a non-empty value")
        if self.split_column and self.test_path:
            raise ValueError("split_column and test_path both name the test rows: give one")
        if not 0.0 < self.test_fraction < 1.0:
            raise option_error(self, "test_fraction", "out of range", "0 < f < 1")
        names = self.target_modules
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n for n in names):
            raise option_error(self, "target_modules", "not a list", "a list of module names")
        object.__setattr__(self, "target_modules", tuple(names))  # a YAML list becomes a tuple
        check_bounds(self)

    def encoder_dir(self) -> Path:
        """Return :func:`resolve_encoder_dir` of ``model_dir``."""
        return resolve_encoder_dir(self.model_dir)

    def _columns(self) -> dict[str, str]:
        columns = {"text_column": self.text_column, "label_column": self.label_column}
        for name in ("group_column", "split_column"):
            if getattr(self, name):
                columns[name] = getattr(self, name)
        return columns

    def _split(self, rows: list[dict[str, str]], n_train: int, labels: np.ndarray) -> _Split:
        """Return train/test indices into the pooled rows."""
        if self.test_path:
            return np.arange(n_train), np.arange(n_train, len(labels))
        if self.split_column:
            values = [r[self.split_column] for r in rows]
            is_test = np.array(split_flags(self.path, self.split_column, values))
            return np.flatnonzero(~is_test), np.flatnonzero(is_test)
        rng = np_rng(self.split_seed, self.name, "split")
        return split_stratified(labels, self.test_fraction, rng)

    def _table(self) -> _Table:
        """Read and check the CSV(s); number the classes; split and subset."""
        rows = read_user_csv(self.path, self._columns(), self.encoding)
        n_train = len(rows)
        if self.test_path:
            rows = rows + read_user_csv(self.test_path, self._columns(), self.encoding)
        names = [r[self.label_column] for r in rows]
        check_labels(self.path, self.label_column, names[:n_train])
        if self.test_path:
            check_labels(self.test_path, self.label_column, names[n_train:])
        groups = [r[self.group_column] for r in rows] if self.group_column else None
        class_names, labels, group_ids = numbered(names, groups)
        train_idx, test_idx = seeded_subsets(
            self._split(rows, n_train, labels),
            self.max_train,
            self.max_test,
            self.split_seed,
            self.name,
        )
        texts = [r[self.text_column] for r in rows]
        return _Table(texts, labels, class_names, group_ids, train_idx, test_idx)

    def peek(self) -> DataPeek:
        """Check the files and return the training labels, without a tokenizer or model.

        Raises:
            FileNotFoundError: if a CSV does not exist.
            ValueError: naming the file and the fix for any problem in it.

        """
        table = self._table()
        groups = None if table.groups is None else table.groups[table.train_idx]
        return DataPeek(table.labels[table.train_idx], groups, table.class_names, self.path)

    def load(self) -> TaskData:
        """Read the CSV(s), split, subset and tokenize.

        Returns:
            The train and test splits; class names are the sorted distinct labels.

        Raises:
            FileNotFoundError: if a CSV or ``model_dir`` does not exist.
            AssetMissingError: if the packaged MiniLM is needed and missing.
            ValueError: naming the file and the fix for any problem in it.

        """
        from ilora.models.encoder import load_tokenizer

        table = self._table()
        tokenizer = load_tokenizer(self.encoder_dir())
        texts = [SPACE_RE.sub(" ", t).strip() for t in table.texts]
        labels, groups = table.labels, table.groups
        train = tokenized_dataset(tokenizer, texts, labels, groups, table.train_idx, self.max_len)
        test = tokenized_dataset(tokenizer, texts, labels, groups, table.test_idx, self.max_len)
        return TaskData(train, test, table.class_names)

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return the encoder (first ``num_layers`` layers, 0 = all) with a seeded head.

        :func:`~ilora.tasks.text_common.encoder_model`, whose errors it raises.
        """
        return encoder_model(self.model_dir, num_classes, seed, self.num_layers or None)
