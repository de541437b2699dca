"""What does activation checkpointing cost on top of each freeze pattern?

Each checkpointed case (no other step axis) was timed in interleaved pairs against its axis
twin, the same case without checkpointing (``axis_twin_ratio``); its saved activations and peak
memory are set against that twin's row in the same run. Only the blocks a pattern leaves
trainable are checkpointed, so a frozen prefix leaves fewer blocks to recompute.
"""

from __future__ import annotations

from typing import Any

from ..format import (
    NOT_MEASURED,
    Row,
    code,
    dist,
    fmt_interval,
    fmt_ratio,
    median,
    plural,
    table,
    values,
    verdict_label,
)
from ..results import is_missing, mechanism_order, pattern_label_order
from . import Facts, Finding, Needs, register
from .step_common import eager_twins


def _quotient(a: Row, b: Row, column: str) -> float | None:
    x: Any = a.get(column)
    y: Any = b.get(column)
    if is_missing(x) or is_missing(y) or not float(y):
        return None
    return float(x) / float(y)


def _checkpointed(row: Row) -> str:
    """How many of the row's blocks were checkpointed (those the pattern leaves trainable)."""
    n: Any = row.get("n_blocks")
    frozen: Any = row.get("frozen_blocks")
    if is_missing(n) or row.get("pattern") == "names":
        return "—"
    return f"{int(n) - len(frozen if not is_missing(frozen) else [])} of {int(n)}"


@register
class CheckpointCost(Finding):
    name = "checkpoint_cost"
    order = 92
    title = "What does activation checkpointing cost on top of each freeze pattern?"
    label = "Checkpointing's cost by frozen pattern"
    needs = Needs(
        where={"checkpoint": ("on",), "amp": ("none",), "compile": ("off",)},
        columns=("axis_twin_ratio",),
        step_axes=True,
    )

    def _by_pattern(self, f: Facts) -> list[tuple[str, list[Row], list[tuple[Row, Row]]]]:
        rows = self.rows(f)
        out = []
        for label in pattern_label_order(rows):
            sub = [r for r in rows if r["pattern_label"] == label]
            out.append((label, sub, eager_twins(f, sub)))
        return out

    def summary(self, f: Facts) -> str:
        parts = []
        for label, sub, pairs in self._by_pattern(f):
            saved = [q for a, b in pairs if (q := _quotient(a, b, "saved_activation_bytes"))]
            name = "nothing frozen" if label == "none" else label
            parts.append(
                f"{name} {fmt_ratio(median(values(sub, 'axis_twin_ratio')))} the step time for "
                f"{fmt_ratio(median(saved))} the saved activations"
            )
        return "against the same case without it, medians: " + "; ".join(parts) + "."

    def detail(self, f: Facts) -> list[str]:
        if not self.rows(f):
            return [
                "No checkpointed case (without autocast or compile) was measured in this run "
                "(`--bench-checkpoint on`; the `quick` and `default` profiles hold a grid)."
            ]
        lines = [
            "Each checkpointed case against the same case without checkpointing: step time in "
            "interleaved pairs (`axis_twin_ratio`, 95% interval), saved activations and peak "
            "memory against that twin's row. Frozen blocks are never checkpointed: under "
            "`no_grad`, `inference_mode` and a frozen prefix with `requires_grad=False` they "
            "save nothing anyway, while under `optimizer_only` and `backward_inputs` they keep "
            "their activations.",
            "",
        ]
        for label, sub, pairs in self._by_pattern(f):
            twins = {id(a): b for a, b in pairs}
            order = mechanism_order(r["mechanism"] for r in sub)
            cells = []
            for r in sorted(sub, key=lambda r: (str(r["model"]), order.index(r["mechanism"]))):
                e = twins.get(id(r))
                cells.append(
                    [
                        f"{f.scope(r)}{r['model']} d{r['depth']} {code(r['mechanism'])}",
                        _checkpointed(r),
                        f"{fmt_ratio(r.get('axis_twin_ratio'))} "
                        + fmt_interval(
                            r.get("axis_twin_ratio_ci_low"), r.get("axis_twin_ratio_ci_high")
                        ),
                        fmt_ratio(_quotient(r, e, "saved_activation_bytes") if e else None),
                        fmt_ratio(_quotient(r, e, "peak_memory_bytes") if e else None),
                        verdict_label(r),
                    ]
                )
            saved = [q for a, b in pairs if (q := _quotient(a, b, "saved_activation_bytes"))]
            lines += [
                f"**{'nothing frozen (the baseline)' if label == 'none' else label}** "
                f"({plural(len(sub), 'case')}): step time "
                f"{dist(values(sub, 'axis_twin_ratio'), fmt_ratio)} of the case without "
                f"checkpointing; saved activations "
                f"{dist(saved, fmt_ratio) if saved else NOT_MEASURED}.",
                "",
                *table(
                    [
                        "case",
                        "blocks checkpointed",
                        "step time vs without [95% CI]",
                        "saved activations vs without",
                        "peak vs without",
                        "verdict",
                    ],
                    cells,
                ),
                "",
            ]
        return lines
