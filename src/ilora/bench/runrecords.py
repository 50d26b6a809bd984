"""The protocol's run records: the text of every decided run, kept beside its result files.

A run directory holds a run's ``config.yaml``, ``history.jsonl`` and ``summary.json`` (or the
``stopped.json`` of a run the engine stopped), a few tens of kB, beside its adapter weights.
Every decision of the protocol is recomputed from those text files (``phases``), so they are
what a stopped protocol needs to pick up where it left off. The runs directory is scratch
space (``runs/`` is not committed); the records directory (``<out>/records/``, committed with
the result files) is not:

- :func:`keep` copies a run's text files into the records as soon as the run is decided, so a
  protocol killed mid-phase loses at most the runs in flight;
- :func:`restore` copies every record whose run directory holds no decided run back into the
  runs directory before an invocation runs anything, so a fresh clone, another machine or a
  deleted ``runs/`` continues the protocol instead of starting it again.

A record is never trusted for more than a run directory would be: a restored run counts only
when its stored config equals the job's (``runner.finished``), exactly as on its first machine.
The records arrive with a clone, so a symbolic link among them is refused: :func:`restore`
skips and counts a record that holds one (it would copy the link's target, any file the user
can read, into the runs), and :func:`keep` will not write through one (it would overwrite the
link's target with a run's text).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from ilora.bench.runner import STOPPED
from ilora.bench.runner import SUMMARY

TEXT = ("config.yaml", "history.jsonl", SUMMARY, STOPPED)  # what the decisions read
ENDED = (SUMMARY, STOPPED)  # a run directory with one of these holds a decided run


class Restored(NamedTuple):
    """What :func:`restore` did: runs brought back, and records refused for a symbolic link."""

    restored: int
    refused: list[Path]


def _decided(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in ENDED)


def _link_below(root: Path, path: Path) -> Path | None:
    """Return the first symbolic link on ``path`` below ``root`` (not ``root`` itself), if any."""
    at = root
    for part in path.relative_to(root).parts:
        at = at / part
        if at.is_symlink():
            return at
    return None


def keep(run_dir: Path, runs: Path, records: Path) -> bool:
    """Copy the text files of the decided run in ``run_dir`` (under ``runs``) into ``records``.

    The record mirrors ``run_dir``'s path relative to ``runs``; files of an earlier record that
    the run no longer has (a ``stopped.json`` after a rerun finished) are removed. Returns
    whether a record was written (an undecided run has none). A symbolic link where the record
    goes raises ``ValueError`` naming it: nothing is written through it.
    """
    if not _decided(run_dir):
        return False
    dest = records / run_dir.relative_to(runs)
    for name in TEXT:
        link = _link_below(records, dest / name)
        if link is not None:
            raise ValueError(f"{link} is a symbolic link: a run record is plain files; remove it")
    dest.mkdir(parents=True, exist_ok=True)
    for name in TEXT:
        src = run_dir / name
        if src.is_file():
            shutil.copyfile(src, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)
    return True


def keep_all(runs: Path, records: Path) -> int:
    """Keep every decided run under ``runs`` (see :func:`keep`); return how many."""
    if not runs.is_dir():
        return 0
    found = {p.parent for name in ENDED for p in runs.glob(f"**/{name}")}
    return sum(keep(d, runs, records) for d in sorted(found))


def restore(records: Path, runs: Path) -> Restored:
    """Copy every record whose run directory holds no decided run into ``runs``.

    A run directory that holds a decided run, of any config, is left alone: the run on disk is
    newer than or equal to its record (:func:`keep` copies each run as it ends). A record with a
    symbolic link among its files or directories is not copied, and is listed as refused.
    """
    restored, refused = 0, list[Path]()
    if not records.is_dir():
        return Restored(0, refused)
    for record in sorted({p.parent for name in ENDED for p in records.glob(f"**/{name}")}):
        if any(_link_below(records, record / name) for name in TEXT):
            refused.append(record)
            continue
        run_dir = runs / record.relative_to(records)
        if _decided(run_dir):
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in TEXT:
            if (record / name).is_file():
                shutil.copyfile(record / name, run_dir / name)
        restored += 1
    return Restored(restored, refused)
