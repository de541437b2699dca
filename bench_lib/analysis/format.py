"""Rendering helpers shared by the run report and the comparison report.

Values are stored in bytes and seconds and scaled here, when rendered: :func:`fmt_bytes`,
:func:`fmt_seconds`, :func:`fmt_ratio` and friends turn one value into text (null into "—"),
:func:`table` turns rows into a markdown table, :func:`dist` and :func:`metric` describe a
distribution of values in one phrase. Nothing here touches the file system.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .results import BYTE_UNITS, EN_DASH, SECOND_UNITS, TIMES, is_missing, scale

__all__ = [
    "NOT_MEASURED",
    "OF_BASE",
    "VERDICT_MEANINGS",
    "CaseColumn",
    "Rendered",
    "Row",
    "anchor",
    "case_table",
    "caveat",
    "code",
    "date",
    "dist",
    "div",
    "fmt_bytes",
    "fmt_interval",
    "fmt_pct",
    "fmt_ratio",
    "fmt_seconds",
    "join",
    "median",
    "metric",
    "plural",
    "ratio_ci",
    "records",
    "slug",
    "table",
    "tidy_text",
    "values",
    "verdict_label",
]

NOT_MEASURED = "not measured in this run"
OF_BASE = "of the baseline's"

#: What each verdict means, for readers of the report (the record's verdict_detail has the
#: numbers of each case).
VERDICT_MEANINGS: dict[str, str] = {
    "ok": "correct: trainable parameters get the reference gradients, frozen ones stay put",
    "graph_cut": "trainable parameters before the frozen blocks received no gradient",
    "frozen_param_moved": "a frozen parameter changed during the steps",
    "frozen_buffer_changed": "a buffer of a frozen block changed (BatchNorm statistics)",
    "grad_mismatch": "trainable gradients differ from the reference beyond the tolerance",
    "error": "the mechanism raised an exception (or a parallel set-up refused it)",
    "rounding_drift": (
        "valid with a caveat: frozen parameters in no optimizer, with no gradient, moved only by "
        "rounding in the forward (peft merging and unmerging an adapter around it); it "
        "accumulates over training"
    ),
}

Row = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """A report: markdown text and the figures it links, by file name (relative to it)."""

    markdown: str
    figures: dict[str, Figure] = field(default_factory=dict)


def _num(value: float) -> str:
    """Three significant figures without exponent for values in [0.001, 10000)."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_bytes(value: Any) -> str:
    """``1536`` -> ``"1.50 KiB"``; null -> ``"—"``."""
    if is_missing(value):
        return "—"
    v, unit = scale(float(value), BYTE_UNITS)
    return f"{v:.0f} B" if unit == "B" else f"{_num(v)} {unit}"


def fmt_seconds(value: Any) -> str:
    """``0.00123`` -> ``"1.23 ms"``; null -> ``"—"``."""
    if is_missing(value):
        return "—"
    v, unit = scale(float(value), SECOND_UNITS)
    return f"{_num(v)} {unit}"


def fmt_ratio(value: Any) -> str:
    """``0.6234`` -> ``"0.62x"`` (with the multiplication sign); null -> ``"—"``."""
    return "—" if is_missing(value) or not math.isfinite(float(value)) else f"{value:.2f}{TIMES}"


def fmt_pct(value: Any) -> str:
    """``0.4567`` -> ``"46%"``; null -> ``"—"``."""
    return "—" if is_missing(value) else f"{100 * float(value):.0f}%"


def fmt_interval(low: Any, high: Any) -> str:
    if is_missing(low) or is_missing(high):
        return "no interval"
    return f"[{float(low):.2f}, {float(high):.2f}]"


def ratio_ci(row: Row) -> str:
    """``"0.62x [0.58, 0.66]"``: a case's time ratio with its interval."""
    if is_missing(row.get("time_ratio")):
        return "—"
    interval = fmt_interval(row.get("time_ratio_ci_low"), row.get("time_ratio_ci_high"))
    return f"{fmt_ratio(row['time_ratio'])} {interval}"


def _drift(row: Row) -> float | None:
    """The per-step drift a caveat verdict carries: the first finite number among the record's
    fields whose name holds ``drift`` (None when there is none)."""
    for key in sorted(row):
        value = row[key]
        if "drift" not in key or isinstance(value, (bool, str)) or is_missing(value):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value):
            return float(value)
    return None


def caveat(row: Row) -> str | None:
    """``"rounding drift ~1e-8/step"``: the caveat of a valid case whose verdict is not ``ok``
    (valid, but with something to know), or None. Any such verdict is a caveat, never a ✗."""
    verdict = row.get("verdict")
    if row.get("validity") != "valid" or is_missing(verdict) or verdict == "ok":
        return None
    text = str(verdict).replace("_", " ")
    drift = _drift(row)
    return text + (f" ~{drift:.0e}/step" if drift is not None else "")


def verdict_label(row: Row) -> str:
    """``✓ ok``, ``✓ valid, rounding drift ~1e-8/step`` (a caveat), ``✗ graph_cut``,
    ``failed: oom`` or ``not measured in this run``."""
    validity = row.get("validity")
    if validity == "failed":
        return f"failed: {row.get('status')}"
    verdict = row.get("verdict")
    if validity == "valid":
        note = caveat(row)
        if note:
            return f"✓ valid, {note}"
        return f"✓ {verdict}" if not is_missing(verdict) else "✓ valid"
    if validity == "invalid":
        return f"✗ {verdict}" if not is_missing(verdict) else "✗ invalid"
    return NOT_MEASURED


#: A column of a table with one row per case: its header and how a row renders in it.
CaseColumn = tuple[str, Callable[[Row], Any]]


def case_table(rows: Iterable[Row], columns: Sequence[CaseColumn]) -> list[str]:
    """A markdown table with one row per case: the one way every case table is written."""
    return table([h for h, _ in columns], [[render(r) for _, render in columns] for r in rows])


def anchor(heading: str) -> str:
    """The link target of a markdown heading, as GitHub makes it: ``#1-what-no_grad-does``."""
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return "#" + text.replace(" ", "-")


def code(name: Any) -> str:
    return f"`{name}`"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table: the header, its rule, one line per row (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


def plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def values(rows: Iterable[Row], column: str) -> list[float]:
    """The finite values of ``column`` in ``rows`` (nulls and NaN left out)."""
    out = []
    for r in rows:
        v: Any = r.get(column)
        if not is_missing(v) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def dist(values: Sequence[float], fmt: Callable[[Any], str], noun: str = "case") -> str:
    """``"a median of 0.62x (0.55x-0.70x over 4 cases)"``, or ``"0.62x (1 case)"``."""
    if not values:
        return NOT_MEASURED
    if len(values) == 1:
        return f"{fmt(values[0])} (1 {noun})"
    med = float(np.median(values))
    span = f"{fmt(min(values))}{EN_DASH}{fmt(max(values))}"
    return f"a median of {fmt(med)} ({span} over {len(values)} {noun}s)"


def metric(
    label: str, values: Sequence[float], fmt: Callable[[Any], str], of: str = "", noun: str = "case"
) -> str:
    """``"step time a median of 0.62x (...) of the baseline's"``, or ``"step time not measured
    in this run"`` when there are no values (``of`` is left out then)."""
    if not values:
        return f"{label} {NOT_MEASURED}"
    return f"{label} {dist(values, fmt, noun)}" + (f" {of}" if of else "")


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values (rendered "—")."""
    return float(np.median(values)) if len(values) else math.nan


def div(a: Any, b: Any) -> float:
    """``a / b``, NaN when either is null or ``b`` is 0."""
    if is_missing(a) or is_missing(b) or not float(b):
        return math.nan
    return float(a) / float(b)


def records(frame: pd.DataFrame) -> list[Row]:
    """The table's rows as dicts with string keys."""
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


def date(text: str | None) -> str:
    if not text:
        return "unknown"
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return text
    zone = d.tzname() or ""
    return d.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def tidy_text(lines: list[str]) -> str:
    """The lines joined, with runs of blank lines collapsed to one and one final newline."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
