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

__all__ = [
    "JOURNAL_VERSION",
    "Journal",
    "JournalContents",
    "JournalError",
    "parse_journal",
    "read_journal",
]

JOURNAL_VERSION = 1


class JournalError(ValueError):
    """The file is not a usable journal. ``str(err)`` is ``"FILE: problem"`` on one line."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class JournalContents:
    """The header, the case entries with their 1-based line numbers, and the line number of an
    incomplete last line that was dropped (``None`` when the journal ended cleanly)."""

    header: dict[str, Any]
    entries: list[dict[str, Any]]
    line_numbers: list[int]
    truncated_line: int | None

    def case_ids(self) -> set[str]:
        return {str(e["extra_info"]["case_id"]) for e in self.entries}


def parse_journal(text: str, path: str) -> JournalContents:
    """Parse a journal's text (``path`` only names it in errors).

    An incomplete last line (no newline after it: a crash mid-write) is dropped and reported in
    ``truncated_line``; any other bad line raises :class:`JournalError`.
    """
    lines = text.split("\n")
    if not text.strip():
        raise JournalError(path, "empty file, not a freeze-bench journal")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise JournalError(path, f"journal line 1 is not valid JSON ({e.msg})") from None
    if not isinstance(header, dict) or "journal_version" not in header:
        raise JournalError(path, "line 1 has no journal_version: not a freeze-bench journal")
    version = header["journal_version"]
    if isinstance(version, bool) or version != JOURNAL_VERSION:
        raise JournalError(
            path,
            f"journal_version {version!r} is not one this freeze-bench knows "
            f"(known: {JOURNAL_VERSION})",
        )
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=1)
    entries: list[dict[str, Any]] = []
    numbers: list[int] = []
    truncated: int | None = None
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            if n == last and not text.endswith("\n"):
                truncated = n
                continue
            raise JournalError(path, f"journal line {n} is not valid JSON ({e.msg})") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("extra_info"), dict):
            raise JournalError(path, f"journal line {n} is not a benchmark entry")
        entries.append(entry)
        numbers.append(n)
    return JournalContents(header, entries, numbers, truncated)


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Read and parse the journal at ``path`` (see :func:`parse_journal`)."""
    return parse_journal(Path(path).read_text(encoding="utf-8"), os.fspath(path))


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
