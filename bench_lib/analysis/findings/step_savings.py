"""Does freezing save under autocast, ``torch.compile`` and activation checkpointing what it
saves in an eager float32 step?

Each frozen case with a step axis is set against its eager twin: the same case in the same
run with every step axis at its default. Both are measured against their own baseline (the
baseline keeps the step axes), so the time and memory ratios say what freezing saves within
each set-up; ``axis_twin_ratio`` (timed in interleaved pairs against that twin) says what the
axis itself did to the case.
"""

from __future__ import annotations

from ..format import (
    NOT_MEASURED,
    Row,
    code,
    fmt_bytes,
    fmt_ratio,
    median,
    plural,
    table,
    values,
    verdict_label,
)
from ..results import mechanism_order, pattern_order
from . import Facts, Finding, Needs, register
from .step_common import axis_label, eager_twins, step_rows


def _labels(rows: list[Row]) -> list[str]:
    return sorted({axis_label(r) for r in rows})


def _order(rows: list[Row]) -> list[Row]:
    patterns = pattern_order(str(r["pattern"]) for r in rows)
    mechanisms = mechanism_order(str(r["mechanism"]) for r in rows)
    return sorted(
        rows,
        key=lambda r: (
            str(r["model"]),
            int(r["depth"]),
            patterns.index(str(r["pattern"])),
            str(r["pattern_label"]),
            mechanisms.index(str(r["mechanism"])),
        ),
    )


def _same_verdicts(pairs: list[tuple[Row, Row]]) -> tuple[int, int]:
    known = [(a, b) for a, b in pairs if {a["validity"], b["validity"]} <= {"valid", "invalid"}]
    return sum(a.get("verdict") == b.get("verdict") for a, b in known), len(known)


def _medians(pairs: list[tuple[Row, Row]], column: str) -> tuple[float, float]:
    """Medians of ``column`` over the step rows and over their eager twins (pairs with both)."""
    both = [(a, b) for a, b in pairs if values([a], column) and values([b], column)]
    return (
        median(values([a for a, _ in both], column)),
        median(values([b for _, b in both], column)),
    )


@register
class StepSavings(Finding):
    name = "step_savings"
    order = 90
    title = (
        "Does freezing save under autocast, `torch.compile` and activation checkpointing what it "
        "saves in eager float32?"
    )
    label = "Freezing under autocast, compile and checkpointing"
    needs = Needs(columns=("time_ratio",), step_axes=True)

    def rows(self, f: Facts) -> list[Row]:
        return [r for r in step_rows(f) if r["mechanism"] != "none"]

    def missing(self, f: Facts) -> str | None:
        if not self.rows(f):
            return f"{NOT_MEASURED} (no frozen case with autocast, compile or checkpointing)"
        return super().missing(f)

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        parts = []
        for label in _labels(rows):
            pairs = eager_twins(f, [r for r in rows if axis_label(r) == label])
            if not pairs:
                sub = [r for r in rows if axis_label(r) == label]
                parts.append(
                    f"{label}: {fmt_ratio(median(values(sub, 'time_ratio')))} the baseline's "
                    f"time (no eager twin in this run)"
                )
                continue
            t, te = _medians(pairs, "time_ratio")
            p, pe = _medians(pairs, "peak_ratio")
            same, known = _same_verdicts(pairs)
            parts.append(
                f"{label}: {fmt_ratio(t)} the baseline's time (eager {fmt_ratio(te)}), "
                f"{fmt_ratio(p)} its peak (eager {fmt_ratio(pe)}), verdicts as in eager in "
                f"{same} of {known}"
            )
        return "frozen cases, medians: " + "; ".join(parts) + "."

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No frozen case with autocast, compile or checkpointing was measured in this run "
                "(`--bench-amp bf16`, `--bench-compile on` or `--bench-checkpoint on`; the "
                "`quick` and `default` profiles hold a grid of each)."
            ]
        lines = [
            "Each frozen case with a step axis against its eager twin (the same case, every "
            "step axis at its default, in the same run). Both ratios are to each one's own "
            "baseline, which keeps the step axes: they say what freezing saves within each "
            "set-up. *vs eager* is the case's step time over its eager twin's, timed in "
            "interleaved pairs (`axis_twin_ratio`).",
            "",
        ]
        for label in _labels(rows):
            sub = _order([r for r in rows if axis_label(r) == label])
            twins = {id(a): b for a, b in eager_twins(f, sub)}
            amp = label.startswith("autocast")
            header = [
                "case",
                "time vs baseline (eager)",
                "peak vs baseline (eager)",
                "saved activations vs baseline (eager)",
                "vs eager",
                "verdict (eager)",
            ] + (["autocast weight copies"] if amp else [])
            cells = []
            for r in sub:
                e = twins.get(id(r), {})
                cell = [
                    f"{f.scope(r)}{r['model']} d{r['depth']} {r['pattern_label']} "
                    f"{code(r['mechanism'])}",
                    f"{fmt_ratio(r.get('time_ratio'))} ({fmt_ratio(e.get('time_ratio'))})",
                    f"{fmt_ratio(r.get('peak_ratio'))} ({fmt_ratio(e.get('peak_ratio'))})",
                    f"{fmt_ratio(r.get('saved_activation_ratio'))} "
                    f"({fmt_ratio(e.get('saved_activation_ratio'))})",
                    fmt_ratio(r.get("axis_twin_ratio")),
                    f"{verdict_label(r)} ({verdict_label(e) if e else '—'})",
                ]
                if amp:
                    cell.append(fmt_bytes(r.get("autocast_weight_bytes")))
                cells.append(cell)
            pairs = [(r, twins[id(r)]) for r in sub if id(r) in twins]
            same, known = _same_verdicts(pairs)
            changed = [a for a, b in pairs if a.get("verdict") != b.get("verdict")]
            lines += [
                f"**{label}** ({plural(len(sub), 'frozen case')}, "
                f"{len(pairs)} with an eager twin; verdicts as in eager in {same} of {known}"
                + (
                    ": changed in " + ", ".join(code(r["case_id"]) for r in changed)
                    if changed
                    else ""
                )
                + f"). Step time {fmt_ratio(median(values(sub, 'axis_twin_ratio')))} the eager "
                f"twin's (median).",
                "",
                *table(header, cells),
                "",
            ]
        lines.append(
            "Ratios are to each set-up's own baseline (its step time, peak memory and saved "
            "activations); under autocast the weight copies autocast keeps for backward are "
            "counted apart from the activations (last column)."
        )
        return lines
