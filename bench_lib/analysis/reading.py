"""Reading benchmark files: pytest-benchmark JSON files and the suite's journals.

:func:`load_run` checks one file, recognised by its content (a journal's first line is an object
with ``journal_version``), and returns a :class:`Run`; every problem with an input file raises
:class:`InputError`, whose message is one line naming the file and the problem.
:mod:`bench_lib.analysis.results` re-exports all of this and turns runs into the tidy table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..journal import JournalError, parse_journal
from ..record import SCHEMA_VERSION

__all__ = ["KNOWN_SCHEMA_VERSIONS", "Entry", "InputError", "Run", "load_run", "load_runs"]

#: Record schema versions this reader understands (every version up to the writer's): 1, and 2
#: (``foreign_bytes``, ``workspace_bytes``; a schema-1 file gets null columns for them).
KNOWN_SCHEMA_VERSIONS: frozenset[int] = frozenset(range(1, SCHEMA_VERSION + 1))


class InputError(Exception):
    """An input file cannot be used. ``str(err)`` is ``"FILE: problem"`` on one line."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = " ".join(problem.split())
        super().__init__(f"{path}: {self.problem}")


@dataclass(frozen=True)
class Entry:
    """One case of a run: its benchmark name, the record, and the stats (None if it failed)."""

    name: str
    group: str | None
    record: Mapping[str, Any]
    stats: Mapping[str, Any] | None


@dataclass(frozen=True)
class Run:
    """One checked input file.

    ``entries`` holds measured cases and failed ones (``stats is None``); ``skipped`` the
    ``{"id", "reason"}`` entries of ``freeze_bench.skipped``; ``notes`` anything the reader
    tolerated and the report should say (e.g. a journal's incomplete last line).
    """

    path: str
    format: str
    datetime: str | None
    version: str | None
    machine_info: Mapping[str, Any]
    commit_info: Mapping[str, Any]
    freeze_bench: Mapping[str, Any]
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def skipped(self) -> list[dict[str, str]]:
        items = self.freeze_bench.get("skipped") or []
        return [
            {"id": str(s.get("id", "?")), "reason": str(s.get("reason", ""))}
            for s in items
            if isinstance(s, Mapping)
        ]

    @property
    def measured(self) -> list[Entry]:
        return [e for e in self.entries if e.stats is not None]

    @property
    def failed(self) -> list[Entry]:
        return [e for e in self.entries if e.stats is None]

    @property
    def profile(self) -> str | None:
        p = self.freeze_bench.get("profile")
        return None if p is None else str(p)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a benchmark file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text, so not a benchmark JSON file") from None
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None


def _check_record(path: str, where: str, record: Any) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise InputError(path, f"{where} has no freeze-bench record (extra_info is not an object)")
    version = record.get("schema_version")
    if version is None:
        raise InputError(
            path, f"{where} has no freeze-bench record (extra_info.schema_version is missing)"
        )
    if isinstance(version, bool) or version not in KNOWN_SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(KNOWN_SCHEMA_VERSIONS))
        raise InputError(
            path,
            f"{where} has record schema_version {version!r}, which this freeze-bench does not "
            f"know (known: {known}); upgrade freeze-bench to read it",
        )
    for key in ("case_id", "mechanism", "pattern", "model", "status"):
        if key not in record:
            raise InputError(path, f"{where}: record has no {key!r} field")
    return record


def _check_stats(path: str, where: str, stats: Any) -> Mapping[str, Any]:
    if not isinstance(stats, Mapping) or "median" not in stats:
        raise InputError(path, f"{where} has no pytest-benchmark stats (stats.median is missing)")
    return stats


def _entry(path: str, where: str, item: Any, *, failed: bool) -> Entry:
    """Check one benchmark object; ``where`` names it in messages (e.g. "benchmark 3")."""
    if not isinstance(item, Mapping):
        raise InputError(path, f"{where} is not an object")
    name = item.get("name")
    if name:
        where = f"{where} ({name})"
    record = _check_record(path, where, item.get("extra_info"))
    raw_stats = item.get("stats")
    stats = None if failed or raw_stats is None else _check_stats(path, where, raw_stats)
    if not failed and stats is None:
        raise InputError(path, f"{where} has no pytest-benchmark stats")
    group = item.get("group")
    return Entry(
        str(name or record["case_id"]), None if group is None else str(group), record, stats
    )


def _load_benchmark_json(path: str, doc: Mapping[str, Any]) -> Run:
    benchmarks = doc.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise InputError(path, "not pytest-benchmark output (no 'benchmarks' list)")
    meta = doc.get("freeze_bench")
    if meta is not None and not isinstance(meta, Mapping):
        raise InputError(path, "'freeze_bench' is not an object")
    meta = meta or {}
    entries = [_entry(path, f"benchmark {i}", b, failed=False) for i, b in enumerate(benchmarks)]
    failed = meta.get("failed") or []
    if not isinstance(failed, list):
        raise InputError(path, "'freeze_bench.failed' is not a list")
    entries += [_entry(path, f"failed case {i}", b, failed=True) for i, b in enumerate(failed)]
    if not entries and not meta:
        raise InputError(
            path, "pytest-benchmark output without any benchmark and without a freeze_bench section"
        )
    return Run(
        path=path,
        format="pytest-benchmark",
        datetime=_opt_str(doc.get("datetime")),
        version=_opt_str(doc.get("version")),
        machine_info=_mapping(doc.get("machine_info")),
        commit_info=_mapping(doc.get("commit_info")),
        freeze_bench=meta,
        entries=tuple(entries),
    )


def _load_journal(path: str, text: str) -> Run:
    try:
        contents = parse_journal(text, path)
    except JournalError as e:
        raise InputError(path, e.problem) from None
    header = contents.header
    entries = [
        _entry(path, f"journal line {n}", item, failed=item.get("stats") is None)
        for n, item in zip(contents.line_numbers, contents.entries, strict=True)
    ]
    # A run that died mid-write leaves its last line incomplete: that is what a journal is
    # for, so the line is dropped and said.
    notes = (
        [f"journal line {contents.truncated_line} is incomplete (the run stopped mid-write)"]
        if contents.truncated_line is not None
        else []
    )
    meta = _mapping(header.get("freeze_bench"))
    return Run(
        path=path,
        format="journal",
        datetime=_opt_str(header.get("datetime")),
        version=None,
        machine_info=_mapping(header.get("machine_info")),
        commit_info=_mapping(header.get("commit_info")),
        freeze_bench=meta,
        entries=tuple(entries),
        notes=tuple(notes),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _first_json_line(text: str) -> Any:
    first = text.split("\n", 1)[0]
    try:
        return json.loads(first)
    except json.JSONDecodeError:
        return None


def load_run(path: str) -> Run:
    """Read and check one file: a pytest-benchmark JSON file or a freeze-bench journal.

    The format is recognised by content: a journal's first line is an object with
    ``journal_version``. Raises :class:`InputError` for a missing, empty, truncated or foreign
    file, a record without ``schema_version`` or with one this reader does not know.
    """
    text = _read_text(path)
    if not text.strip():
        raise InputError(path, "empty file")
    first = _first_json_line(text)
    if isinstance(first, Mapping) and "journal_version" in first:
        return _load_journal(path, text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        # A document cut short (a run killed while writing) ends inside it, not on a bracket.
        if e.pos >= len(text.rstrip()) or text.rstrip()[-1] not in "}]":
            problem = "truncated JSON (the file ends before the document does)"
        else:
            problem = f"invalid JSON at line {e.lineno} column {e.colno} ({e.msg})"
        raise InputError(path, problem) from None
    if not isinstance(doc, Mapping):
        raise InputError(path, "not pytest-benchmark output (the JSON is not an object)")
    return _load_benchmark_json(path, doc)


def load_runs(paths: Sequence[str]) -> list[Run]:
    """:func:`load_run` for every path, in order; the first problem raises."""
    return [load_run(p) for p in paths]
