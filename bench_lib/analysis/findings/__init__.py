"""Findings: the questions a report answers, one object each, in a registry.

A finding names the rows it draws on and the columns its headline's number comes from
(:class:`Needs`), gives a one-line headline with that number (:meth:`Finding.headline`; "not
measured in this run" when the rows or columns are absent) and renders its detail section
(:meth:`Finding.detail`, and :meth:`Finding.figures` if it draws any). The report asks
:func:`findings` for all of them, in their ``order``, and assembles headlines and sections
without knowing any by name.

A new finding joins by adding a module to this package that defines a :class:`Finding`
subclass decorated with :func:`register`; :func:`findings` imports every module of the package.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pandas as pd
from matplotlib.figure import Figure

from ...axes import step_axes
from ..format import NOT_MEASURED, Row, code, join, records
from ..results import Run, has_adapter, has_step_axis, is_missing
from ..setups import is_parallel, setup_columns

__all__ = [
    "REGISTRY",
    "Facts",
    "Finding",
    "Needs",
    "facts",
    "findings",
    "register",
]


@dataclass(frozen=True)
class Facts:
    """The rows the findings draw on. ``ok``, ``failed`` and ``frame`` hold the single-process
    cases only (parallel set-up ``none``): no single-process number mixes in a parallel case.
    ``parallel`` holds every case with a parallel set-up, measured or failed, for the findings
    about data parallelism."""

    ok: list[Row]
    failed: list[Row]
    skipped: list[dict[str, str]]
    #: Columns that split the answers' bullets: ``device`` when the runs hold several devices,
    #: ``source_label`` when one case id appears in several files (two runs of one sweep).
    scope_columns: tuple[str, ...]
    #: The tidy table of the single-process cases (for figures).
    frame: pd.DataFrame
    #: Every case with a parallel set-up (DDP, FSDP), measured or failed.
    parallel: list[Row] = field(default_factory=list)

    def where(self, **axes: Any) -> list[Row]:
        """The measured rows with these axis values; without an ``adapter`` given, only rows
        without an adapter (the findings about freezing mechanisms never mix LoRA cases in)."""
        axes.setdefault("adapter", "none")
        for axis, values in step_axes().items():  # and eager float32 steps only, unless asked
            axes.setdefault(axis, values[0])
        return [r for r in self.ok if all(r.get(k) == v for k, v in axes.items())]

    def scope(self, row: Row) -> str:
        if not self.scope_columns:
            return ""
        return "[" + ", ".join(str(row[c]) for c in self.scope_columns) + "] "

    @property
    def validity_measured(self) -> bool:
        return any(r["validity"] in ("valid", "invalid") for r in self.ok)


def facts(frame: pd.DataFrame, runs: Sequence[Run]) -> Facts:
    """The :class:`Facts` of a tidy table and the runs it was made from."""
    everything = records(frame)
    rows = [r for r in everything if not is_parallel(r)]
    return Facts(
        ok=[r for r in rows if r["status"] == "ok"],
        failed=[r for r in rows if r["status"] != "ok"],
        skipped=[s for run in runs for s in run.skipped],
        scope_columns=tuple(
            c
            for c in ("device", "source_label")
            if (c == "device" and len({r["device"] for r in everything}) > 1)
            or (c == "source_label" and c in setup_columns(frame))
        ),
        frame=frame[[not is_parallel(r) for r in everything]] if len(frame) else frame,
        parallel=[r for r in everything if is_parallel(r)],
    )


@dataclass(frozen=True)
class Needs:
    """What a finding draws on: rows whose ``where`` columns hold one of the given values and
    whose ``exclude`` columns do not (failed cases too if ``failed``), and the ``columns`` its
    headline's number comes from. Rows with an adapter (LoRA) count only if ``adapters``, rows
    with a step axis (autocast, compile, checkpointing) only if ``step_axes``."""

    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    exclude: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    columns: tuple[str, ...] = ()
    failed: bool = False
    adapters: bool = False
    step_axes: bool = False

    def rows(self, f: Facts) -> list[Row]:
        pool = f.ok + f.failed if self.failed else f.ok
        return [
            r
            for r in pool
            if all(r.get(k) in v for k, v in self.where.items())
            and not any(r.get(k) in v for k, v in self.exclude.items())
            and (self.adapters or not has_adapter(r))
            and (self.step_axes or not has_step_axis(r))
        ]

    def describe(self) -> str:
        """``"mechanism `no_grad`"``: the rows, in words."""
        parts = [f"{k} {join([code(v) for v in vs])}" for k, vs in self.where.items()]
        parts += [f"{k} other than {join([code(v) for v in vs])}" for k, vs in self.exclude.items()]
        return ", ".join(parts) or "any case"


class Finding(ABC):
    """One question the report answers. Subclasses set the class attributes and implement
    :meth:`summary` and :meth:`detail`."""

    #: Registry key.
    name: ClassVar[str]
    #: Position in the report (lower first).
    order: ClassVar[int]
    #: Heading of the detail section.
    title: ClassVar[str]
    #: Short name leading the headline.
    label: ClassVar[str]
    needs: ClassVar[Needs]

    def rows(self, f: Facts) -> list[Row]:
        return self.needs.rows(f)

    def missing(self, f: Facts) -> str | None:
        """Why the headline has no number ("not measured in this run (...)"), or None."""
        rows = self.rows(f)
        if not rows:
            return f"{NOT_MEASURED} (no case with {self.needs.describe()})"
        absent = [c for c in self.needs.columns if all(is_missing(r.get(c)) for r in rows)]
        if absent:
            return f"{NOT_MEASURED} (its cases have no {join([code(c) for c in absent])})"
        return None

    def headline(self, f: Facts) -> str:
        """One line: the label and the key number, or why there is none."""
        why = self.missing(f)
        return f"**{self.label}**: " + (f"{why}." if why else self.summary(f))

    @abstractmethod
    def summary(self, f: Facts) -> str:
        """The headline's text after the label (called only when :meth:`missing` is None)."""

    @abstractmethod
    def detail(self, f: Facts) -> list[str]:
        """The detail section's lines (without its heading); says itself what is missing."""

    def figures(self, f: Facts) -> dict[str, Figure]:
        """Figures the detail links, by file name."""
        return {}


#: Every registered finding, by name.
REGISTRY: dict[str, Finding] = {}

F = TypeVar("F", bound=type[Finding])


def register(cls: F) -> F:
    """Class decorator: add an instance of ``cls`` to :data:`REGISTRY` under ``cls.name``."""
    if cls.name in REGISTRY and type(REGISTRY[cls.name]) is not cls:
        raise ValueError(f"two findings are named {cls.name!r}")
    REGISTRY[cls.name] = cls()
    return cls


def findings() -> list[Finding]:
    """Every finding of this package's modules, in report order."""
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)
    return sorted(REGISTRY.values(), key=lambda f: (f.order, f.name))
