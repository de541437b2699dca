"""The journal: every finished case, appended and flushed to disk as soon as it is measured.

pytest-benchmark writes its JSON once, at the end of the session (versions before 5.3 also
truncate the file when the session starts), so a sweep killed midway would lose everything.
The journal is a JSON-lines file beside it. Line 1 is a header ``{"journal_version": 1,
"machine_info": ..., "datetime": ..., "freeze_bench": ...}``; every further line is one case
in pytest-benchmark's own benchmark format (``name``, ``group``, ``params``, ``extra_info`` =
the record, ``stats`` with the raw ``data``), or with ``stats: null`` for a case that failed
before its timed loop.

Each line is written with one ``write`` call, flushed and fsynced, so a crash can at worst leave
one truncated last line, which :func:`read_journal` drops. This module imports neither torch
nor pytest: the report reads journals too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["JOURNAL_VERSION", "Journal", "JournalContents", "JournalError", "read_journal"]

JOURNAL_VERSION = 1


class JournalError(ValueError):
    """The file is not a freeze-bench journal (message names the file and the problem)."""


@dataclass(frozen=True)
class JournalContents:
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    truncated_lines: int

    def case_ids(self) -> set[str]:
        return {str(e["extra_info"]["case_id"]) for e in self.entries}


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal; a truncated or unparsable *last* line (a crash mid-write) is dropped and
    counted, any other bad line raises :class:`JournalError`."""
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise JournalError(f"{p}: empty file, not a freeze-bench journal")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise JournalError(f"{p}: line 1 is not JSON ({e.msg})") from None
    if not isinstance(header, dict) or "journal_version" not in header:
        raise JournalError(f"{p}: line 1 has no journal_version, not a freeze-bench journal")
    if header["journal_version"] != JOURNAL_VERSION:
        raise JournalError(
            f"{p}: journal_version {header['journal_version']!r} is not {JOURNAL_VERSION}"
        )
    entries: list[dict[str, Any]] = []
    truncated = 0
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                truncated += 1
                continue
            raise JournalError(f"{p}: line {n} is not JSON ({e.msg})") from None
        if not isinstance(entry, dict) or "extra_info" not in entry:
            raise JournalError(f"{p}: line {n} is not a benchmark entry")
        entries.append(entry)
    return JournalContents(header, entries, truncated)


class Journal:
    """An append-only journal file. ``resume=True`` keeps an existing journal and appends to it;
    otherwise an existing file is first renamed to ``PATH.prev`` (results are never discarded).
    """

    def __init__(
        self, path: str | os.PathLike[str], header: Mapping[str, Any], *, resume: bool
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing and not resume:
            os.replace(self.path, self.path.with_name(self.path.name + ".prev"))
            existing = False
        if existing:
            self._repair_tail()
        self._fh: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (long-lived)
        if not existing:
            self._write({"journal_version": JOURNAL_VERSION, **header})

    def _repair_tail(self) -> None:
        """Drop a truncated last line left by a killed run, so that appends start clean."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            self.path.write_bytes(data[:cut])

    def _write(self, obj: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(obj, default=repr) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, entry: Mapping[str, Any]) -> None:
        """Append one finished case (a pytest-benchmark benchmark entry)."""
        self._write(entry)

    def close(self) -> None:
        self._fh.close()
