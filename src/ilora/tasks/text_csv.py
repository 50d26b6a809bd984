"""The ``text-csv`` task: bring your own text classification CSV and local encoder."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from torch import nn

from ilora.models.encoder import EncoderClassifier, load_encoder, load_tokenizer
from ilora.seeding import np_rng
from ilora.tasks.base import TaskData
from ilora.tasks.text_common import (
    _SPACE_RE,
    BERT_HEAD,
    BERT_LORA_TARGETS,
    MAX_POSITIONS,
    _cap,
    _check_range,
    _class_index,
    _Corpus,
    _dataset,
    _ids,
    split_stratified,
)

__all__ = ["TextCSV"]


def _read_user_csv(path: str, columns: dict[str, str]) -> list[dict[str, str]]:
    """Read a user CSV and check it has ``columns`` (option name -> column name).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is empty or a column is missing (naming the columns present).

    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"CSV file {path!r} does not exist")
    with file.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.DictReader(stream)
        present = list(reader.fieldnames or [])
        rows = list(reader)
    for option, column in columns.items():
        if column not in present:
            raise ValueError(
                f"{path!r} has no column {column!r} ({option}); columns present: "
                f"{', '.join(repr(c) for c in present) or 'none'}"
            )
    if not rows:
        raise ValueError(f"{path!r} has no data rows")
    return rows


@dataclass(frozen=True)
class TextCSV:
    """Bring your own text classification CSV and local Hugging Face encoder directory."""

    path: str = field(default="", metadata={"help": "CSV file with a text and a label column"})
    model_dir: str = field(
        default="", metadata={"help": "local Hugging Face encoder dir (required; never downloaded)"}
    )
    text_column: str = field(default="text", metadata={"help": "column holding the text"})
    label_column: str = field(default="label", metadata={"help": "column holding the class"})
    group_column: str = field(
        default="", metadata={"help": "optional column of natural groups for by_group ('' = none)"}
    )
    test_path: str = field(
        default="", metadata={"help": "test CSV ('' = seeded stratified split of path)"}
    )
    test_fraction: float = field(
        default=0.2, metadata={"help": "test share when test_path is empty (0 < f < 1)"}
    )
    max_len: int = field(default=64, metadata={"help": "tokens per text (2..512)"})
    max_train: int = field(default=0, metadata={"help": "seeded train subset (0 = all)"})
    max_test: int = field(default=0, metadata={"help": "seeded test subset (0 = all)"})
    num_layers: int = field(default=0, metadata={"help": "keep the first n layers (0 = all)"})
    split_seed: int = field(default=0, metadata={"help": "seed of split and subsets (>= 0)"})

    name: ClassVar[str] = "text-csv"
    lora_targets: ClassVar[tuple[str, ...]] = BERT_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = BERT_HEAD

    def __post_init__(self) -> None:
        for option in ("path", "model_dir", "text_column", "label_column"):
            if not getattr(self, option):
                raise ValueError(f"{option}='' is not allowed: {option} is required")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(
                f"test_fraction={self.test_fraction!r} is out of range: allowed 0 < f < 1"
            )
        _check_range("max_len", self.max_len, 2, MAX_POSITIONS)
        _check_range("max_train", self.max_train, 0)
        _check_range("max_test", self.max_test, 0)
        _check_range("num_layers", self.num_layers, 0)
        _check_range("split_seed", self.split_seed, 0)

    def _columns(self) -> dict[str, str]:
        columns = {"text_column": self.text_column, "label_column": self.label_column}
        if self.group_column:
            columns["group_column"] = self.group_column
        return columns

    def _corpus(self, rows: list[dict[str, str]]) -> _Corpus:
        groups = [r[self.group_column] for r in rows] if self.group_column else None
        return _Corpus(
            [r[self.text_column] for r in rows], [r[self.label_column] for r in rows], groups
        )

    def _split(self, n_train: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return train/test indices into the pooled rows (a seeded split if no test file)."""
        if self.test_path:
            return np.arange(n_train), np.arange(n_train, len(labels))
        rng = np_rng(self.split_seed, self.name, "split")
        return split_stratified(labels, self.test_fraction, rng)

    def load(self) -> TaskData:
        """Read the CSV(s), split, subset and tokenize.

        Returns:
            The train and test splits; class names are the sorted distinct labels.

        Raises:
            FileNotFoundError: if a CSV or ``model_dir`` does not exist.
            ValueError: if a column is missing or a file has no rows.

        """
        rows = _read_user_csv(self.path, self._columns())
        n_train = len(rows)
        if self.test_path:
            rows = rows + _read_user_csv(self.test_path, self._columns())
        corpus = self._corpus(rows)
        tokenizer = load_tokenizer(self.model_dir)
        class_names = _class_index(corpus.labels)
        labels = _ids(corpus.labels, class_names)
        groups = None
        if corpus.groups is not None:
            groups = _ids(corpus.groups, _class_index(corpus.groups))
        train_idx, test_idx = self._split(n_train, labels)
        train_idx = _cap(train_idx, self.max_train, np_rng(self.split_seed, self.name, "train"))
        test_idx = _cap(test_idx, self.max_test, np_rng(self.split_seed, self.name, "test"))
        texts = [_SPACE_RE.sub(" ", t).strip() for t in corpus.texts]
        train = _dataset(tokenizer, texts, labels, groups, train_idx, self.max_len)
        test = _dataset(tokenizer, texts, labels, groups, test_idx, self.max_len)
        return TaskData(train, test, class_names)

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return the local encoder (first ``num_layers`` layers, 0 = all) with a seeded head.

        Args:
            num_classes: head width.
            seed: head seed.

        Returns:
            An ``EncoderClassifier``.

        Raises:
            FileNotFoundError: if ``model_dir`` does not exist.

        """
        backbone = load_encoder(self.model_dir)
        layers = self.num_layers or None
        return EncoderClassifier(backbone, num_classes, seed, num_layers=layers)
