"""The ``tiny-text`` task: synthetic keyword classification with a tiny random BERT, for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import ClassVar

from ilora.config.fields import option
from ilora.seeding import generator
from ilora.tasks.base import ArrayDataset
from ilora.tasks.base import TaskData
from ilora.tasks.options import bounded
from ilora.tasks.options import check_bounds
from ilora.tasks.options import check_range
from ilora.tasks.text_common import BERT_HEAD
from ilora.tasks.text_common import BERT_LORA_TARGETS
from ilora.tasks.text_common import MAX_POSITIONS

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TinyText"]

PAD_ID, CLS_ID, SEP_ID, FIRST_KEYWORD_ID = 0, 1, 2, 4


@dataclass(frozen=True)
class TinyText:
    """Synthetic text classification for tests: the class is the keyword token that appears.

    Token ids: 0 pad, 1 ``[CLS]``, 2 ``[SEP]``, ``4..4+C-1`` the class keywords, the rest
    filler. Each sequence is ``[CLS] filler... [SEP] pad...`` of seeded length
    ``max(3, L//2)..L``, with its class keyword placed at one or two random content
    positions. The model is ``tiny_bert`` (real ``BertModel`` module names). Generated with
    ``torch.Generator``s only: bitwise reproducible, no global RNG.
    """

    num_classes: int = bounded(4, "number of classes", 2, 16)
    vocab_size: int = option(128, "token ids below this (num_classes + 8 .. 30522)")
    seq_len: int = bounded(16, "padded sequence length L", 4, MAX_POSITIONS)
    n_train: int = bounded(256, "train examples", 1)
    n_test: int = bounded(128, "test examples", 1)
    num_groups: int = bounded(8, "random natural groups for by_group, 0 = no groups", 0)
    data_seed: int = bounded(0, "seed of the generated data", 0)

    name: ClassVar[str] = "tiny-text"
    lora_targets: ClassVar[tuple[str, ...]] = BERT_LORA_TARGETS
    head: ClassVar[tuple[str, ...]] = BERT_HEAD

    def __post_init__(self) -> None:
        check_bounds(self)
        check_range(self, "vocab_size", self.num_classes + 8, 30522)

    def _generate(self, split: str, n: int) -> ArrayDataset:
        """Draw ``n`` examples from ``generator(data_seed, "tiny-text", split)``."""
        import numpy as np
        import torch

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
        from ilora.models.encoder import tiny_bert  # transformers: only when a model is built

        return tiny_bert(seed, num_classes=num_classes, vocab_size=self.vocab_size)
