"""Helpers several findings share: pairing cases of two mechanisms, verdict summaries."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..format import (
    NOT_MEASURED,
    OF_BASE,
    Row,
    caveat,
    code,
    dist,
    fmt_ratio,
    join,
    plural,
    values,
)
from ..ranking import decide
from ..results import is_missing, mechanism_order, pattern_order, setup_key
from ..setups import SETUP_COLUMNS

__all__ = ["cut_and_cheapest", "example_detail", "pairs", "quotients", "validity_summary"]


def _pair_key(row: Row) -> tuple[Any, ...]:
    blocks: Any = row.get("frozen_blocks")
    return (
        row["source"],
        *setup_key(row, SETUP_COLUMNS),
        row["depth"],
        row["pattern"],
        tuple(blocks) if not is_missing(blocks) else (),
        row.get("frozen_mode"),
    )


def pairs(rows_a: list[Row], rows_b: list[Row]) -> list[tuple[Row, Row]]:
    """Rows of ``rows_a`` with the row of ``rows_b`` measured on the same case."""
    index = {_pair_key(r): r for r in rows_b}
    return [(a, index[_pair_key(a)]) for a in rows_a if _pair_key(a) in index]


def quotients(pairs: list[tuple[Row, Row]], column: str) -> list[float]:
    """``a[column] / b[column]`` for every pair where both are known and ``b``'s is not 0."""
    out = []
    for a, b in pairs:
        x: Any = a.get(column)
        y: Any = b.get(column)
        if not is_missing(x) and not is_missing(y) and float(y):
            out.append(float(x) / float(y))
    return out


def validity_summary(rows: list[Row], patterns: bool = True) -> str:
    """``"valid in 2 of 4; ✗ graph_cut in 2 (middle, alternating)"`` (patterns named if
    ``patterns``)."""
    known = [r for r in rows if r["validity"] in ("valid", "invalid")]
    if not known:
        return f"validity {NOT_MEASURED}"
    valid = [r for r in known if r["validity"] == "valid"]
    text = f"valid in {len(valid)} of {len(rows)}"
    caveats = Counter(note for r in valid if (note := caveat(r)) is not None)
    if caveats:
        text += " (" + ", ".join(f"{n} with {note}" for note, n in caveats.items()) + ")"
    bad = Counter(str(r.get("verdict") or "invalid") for r in known if r["validity"] == "invalid")
    for verdict, n in bad.items():
        text += f"; ✗ {verdict} in {n}"
        if patterns:
            names = pattern_order(str(r["pattern"]) for r in known if r.get("verdict") == verdict)
            text += f" ({', '.join(names)})"
    unknown = len(rows) - len(known)
    if unknown:
        text += f"; {unknown} {NOT_MEASURED}"
    return text


def example_detail(rows: list[Row]) -> str:
    """`` Example, `case`: its verdict detail.`` for the first invalid row that has one."""
    for r in rows:
        if r["validity"] == "invalid" and not is_missing(r.get("verdict_detail")):
            return f" Example, {code(r['case_id'])}: {r['verdict_detail']}."
    return ""


def cut_and_cheapest(rows: list[Row], validity_measured: bool) -> str:
    """``"`no_grad`, `inference_mode` cut the graph in 4 of 4 cases; cheapest valid:
    `requires_grad` 0.88× time, 0.97× memory"``: a headline for rows of several mechanisms."""
    if not validity_measured:
        return (
            f"validity {NOT_MEASURED}; step time {dist(values(rows, 'time_ratio'), fmt_ratio)} "
            f"{OF_BASE}."
        )
    parts = []
    cut = [r for r in rows if r.get("verdict") == "graph_cut"]
    if cut:
        mechanisms = mechanism_order(r["mechanism"] for r in cut)
        of_those = [r for r in rows if r["mechanism"] in mechanisms]
        parts.append(
            f"{join([code(m) for m in mechanisms])} cut the graph in {len(cut)} of "
            f"{plural(len(of_those), 'case')}"
        )
    choice = decide(rows)
    parts.append(f"cheapest valid: {choice.sentence()}" if choice else "no mechanism was valid")
    return "; ".join(parts) + "."
