"""Reading a user's CSV for ``text-csv``: every problem is one line naming the file and the fix.

Checked here, without a tokenizer or a model: the file exists and decodes in the given encoding,
has the named columns and data rows, every row has every field, labels are non-empty class names
(not fractional numbers), and a split column holds only ``train``/``test``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

__all__ = ["SPLIT_VALUES", "check_labels", "read_user_csv", "split_flags"]

SPLIT_VALUES = ("train", "test")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")


def _decode_problem(path: str, encoding: str, err: UnicodeDecodeError) -> ValueError:
    byte = err.object[err.start : err.start + 1].hex()
    return ValueError(
        f"{path!r} is not {encoding} text (byte 0x{byte} at offset {err.start}); set "
        "task_args.encoding to the file's encoding (e.g. latin-1, cp1252) or re-save it as UTF-8"
    )


def read_user_csv(path: str, columns: dict[str, str], encoding: str) -> list[dict[str, str]]:
    """Read a user CSV and check it has ``columns`` (option name -> column name) in every row.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it does not decode, is empty, lacks a column or has a short row.

    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"CSV file {path!r} does not exist; fix task_args.path")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        with file.open(encoding=codec, newline="") as stream:
            reader = csv.DictReader(stream)
            present = list(reader.fieldnames or [])
            rows = list(reader)
    except UnicodeDecodeError as err:
        raise _decode_problem(path, encoding, err) from None
    except LookupError:
        raise ValueError(f"task_args.encoding={encoding!r} is not a known text encoding") from None
    for option, column in columns.items():
        if column not in present:
            raise ValueError(
                f"{path!r} has no column {column!r} ({option}); columns present: "
                f"{', '.join(repr(c) for c in present) or 'none'}"
            )
    if not rows:
        raise ValueError(f"{path!r} has no data rows")
    for line, row in enumerate(rows, start=2):
        if any(row.get(column) is None for column in columns.values()):
            raise ValueError(
                f"{path!r} line {line} has fewer fields than the header; fix or drop that row"
            )
    return rows


def check_labels(path: str, column: str, labels: list[str]) -> None:
    """Check that ``labels`` (one per row, from ``column``) are class names.

    Raises:
        ValueError: for an empty label, or fractional numbers (a regression target).

    """
    for line, label in enumerate(labels, start=2):
        if not label.strip():
            raise ValueError(
                f"{path!r} line {line}: empty label in column {column!r}; fill it or drop the row"
            )
    if all(_NUMBER.fullmatch(v.strip()) for v in labels):
        fractional = next((v for v in labels if not _INTEGER.fullmatch(v.strip())), None)
        if fractional is not None:
            raise ValueError(
                f"{path!r} column {column!r} holds fractional numbers (e.g. {fractional!r}); "
                "text-csv classifies: give class names or integer class ids"
            )


def split_flags(path: str, column: str, values: list[str]) -> list[bool]:
    """Return, per row, whether it belongs to the test split (``split_column``).

    Raises:
        ValueError: if a value is not ``train`` or ``test`` (any case), or no row is ``test``.

    """
    flags = [v.strip().lower() for v in values]
    wrong = sorted({v for v in flags if v not in SPLIT_VALUES})
    if wrong:
        raise ValueError(
            f"{path!r} column {column!r} (split_column) holds {', '.join(map(repr, wrong))}; "
            "allowed: 'train' or 'test'"
        )
    is_test = [v == "test" for v in flags]
    if not any(is_test) or all(is_test):
        missing = "test" if not any(is_test) else "train"
        raise ValueError(
            f"{path!r} column {column!r} (split_column) marks no row {missing!r}; "
            "each split needs examples"
        )
    return is_test
