"""The report's opening section: every finding's headline, then one table of model family ×
frozen pattern holding the cheapest valid mechanism of each cell."""

from __future__ import annotations

from collections.abc import Sequence

from ..vocab import MODELS
from .findings import Facts, Finding
from .format import NOT_MEASURED, Row, table
from .header import foreign_line
from .ranking import cheapest
from .results import has_adapter, has_step_axis, order_names, pattern_order

__all__ = ["at_a_glance", "family_pattern_table"]


def _key(f: Facts, row: Row) -> tuple[str, str]:
    """A table row: the scope (device or file, when the report holds several) and the model."""
    return f.scope(row), str(row["model"])


def family_pattern_table(f: Facts) -> list[str]:
    """Per model family (and scope) and pattern: the valid, non-trap mechanism with the lowest
    median time ratio over the family's cases of that pattern, with its time and peak-memory
    ratios to the baseline (:func:`bench_lib.analysis.ranking.cheapest`). LoRA cases and
    cases with a step axis (autocast, compile, checkpointing) are left out (their own findings
    compare them)."""
    rows = [
        r for r in f.ok if r["mechanism"] != "none" and not has_adapter(r) and not has_step_axis(r)
    ]
    if not rows:
        return []
    models = order_names((r["model"] for r in rows), MODELS)
    keys = sorted({_key(f, r) for r in rows}, key=lambda k: (k[0], models.index(k[1])))
    seeds = {_key(f, r) for r in rows if r.get("scenario") == "seed"}
    patterns = [p for p in pattern_order(r["pattern"] for r in rows) if p != "none"]
    cells = []
    for key in keys:
        line = [f"{key[0]}{key[1]}" + (" (seed)" if key in seeds else "")]
        for pattern in patterns:
            sub = [r for r in rows if _key(f, r) == key and r["pattern"] == pattern]
            choice = cheapest(sub)
            if not sub:
                line.append("—")
            elif choice is not None:
                line.append(choice.cell())
            else:
                line.append("none valid" if f.validity_measured else f"validity {NOT_MEASURED}")
        cells.append(line)
    return [
        "Cheapest valid mechanism per model family and frozen pattern (traps never count): the "
        "median of its time and peak-memory ratios to the baseline over the family's cases "
        "where it was valid.",
        "",
        *table(["family", *patterns], cells),
    ]


def at_a_glance(f: Facts, found: Sequence[Finding]) -> list[str]:
    """The section: headlines, foreign memory (when any case had some), the table."""
    lines = ["## At a glance", ""]
    lines += [f"- {finding.headline(f)}" for finding in found]
    foreign = foreign_line(f.ok)
    if foreign:
        lines.append(f"- **Foreign memory**: {foreign}")
    return [*lines, "", *family_pattern_table(f), ""]
