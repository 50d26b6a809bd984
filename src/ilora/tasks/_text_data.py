"""Text examples to tensors: cleaning, label ids, the stratified split, subsets, tokenization.

Pure functions shared by the text tasks (``text_common.py``, ``text_csv.py``, ``tiny_text.py``);
every random choice takes the seeded generator it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

from ilora.seeding import np_rng
from ilora.tasks.base import ArrayDataset

if TYPE_CHECKING:
    import numpy as np
    import torch

URL_RE = re.compile(
    r"h?ttps?(?::|…)\S*"  # scheme, even glued to a word or typo'd ("ttp:"), or "http…"
    r"|\bhttps?\b\S*"  # a bare truncated "http" ("... http ...")
    r"|(?<![\w.@])www\.\S+"  # www.example.com/...
    r"|\b(?:[a-z0-9-]+\.)+[a-z]{2,}/\S*"  # bare domain + path: bit.ly/x, on.fb.me/x
    r"|\S+@[a-z0-9-]+(?:\.[a-z0-9-]+)+",  # e-mail addresses (askhealth@health.com)
    re.IGNORECASE,
)
SPACE_RE = re.compile(r"\s+")


def strip_urls(text: str) -> str:
    """Remove URLs (also truncated or scheme-less ones) and e-mail addresses from ``text``.

    Args:
        text: a raw text, e.g. a tweet.

    Returns:
        The text without links, whitespace collapsed.

    """
    return SPACE_RE.sub(" ", URL_RE.sub(" ", text)).strip()


def class_index(values: Iterable[str]) -> tuple[str, ...]:
    """Return the sorted distinct values (numerically if they are all integers)."""
    distinct = set(values)
    if distinct and all(re.fullmatch(r"[+-]?\d+", v.strip()) for v in distinct):
        return tuple(sorted(distinct, key=lambda v: int(v.strip())))
    return tuple(sorted(distinct))


def label_ids(values: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Return ``(N,)`` int64 positions of ``values`` in ``names``."""
    import numpy as np

    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64)


def numbered(
    labels: Sequence[str], groups: Sequence[str] | None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None]:
    """Return the class names and the ``(N,)`` label and group ids (``None`` without groups).

    Classes and groups are each numbered in :func:`class_index` order.
    """
    names = class_index(labels)
    group_ids = None if groups is None else label_ids(groups, class_index(groups))
    return names, label_ids(labels, names), group_ids


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
    import numpy as np

    test_parts: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))  # (n_c,)
        test_parts.append(members[: int(round(test_fraction * len(members)))])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test)  # sorted
    return train.astype(np.int64), test.astype(np.int64)


def cap(idx: np.ndarray, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """Return a seeded random subset of ``max_n`` of ``idx`` (sorted); ``0`` keeps all."""
    import numpy as np

    if max_n == 0 or max_n >= len(idx):
        return idx
    return np.sort(rng.choice(idx, size=max_n, replace=False))


def seeded_subsets(
    split: tuple[np.ndarray, np.ndarray], max_train: int, max_test: int, seed: int, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``(train_idx, test_idx)`` of ``split`` each cut by :func:`cap` (0 keeps all).

    The generators are ``np_rng(seed, task, "train")`` and ``np_rng(seed, task, "test")``.
    """
    train_idx, test_idx = split
    return (
        cap(train_idx, max_train, np_rng(seed, task, "train")),
        cap(test_idx, max_test, np_rng(seed, task, "test")),
    )


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` with padding to and truncation at ``max_len``.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        texts: the texts.
        max_len: sequence length ``L``.

    Returns:
        ``{"input_ids": (N, L) int64, "attention_mask": (N, L) int64}``.

    """
    import torch

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


def tokenized_dataset(
    tokenizer: Any,
    texts: Sequence[str],
    labels: np.ndarray,
    groups: np.ndarray | None,
    idx: np.ndarray,
    max_len: int,
) -> ArrayDataset:
    """Tokenize the examples at ``idx`` into an ``ArrayDataset``."""
    import torch

    inputs = tokenize(tokenizer, [texts[i] for i in idx], max_len)
    sub_groups = None if groups is None else groups[idx]
    return ArrayDataset(inputs, torch.as_tensor(labels[idx], dtype=torch.int64), sub_groups)
