"""What ``no_grad`` does to the graph, time and memory against the baseline."""

from __future__ import annotations

from ..format import OF_BASE, Row, dist, fmt_pct, fmt_ratio, median, metric, plural, values
from ..results import pattern_label_order
from . import Facts, Finding, Needs, register
from .common import example_detail, pairs, quotients, validity_summary


@register
class NoGrad(Finding):
    name = "no_grad"
    order = 10
    title = "What `no_grad` does to the graph, time and memory against the baseline"
    label = "`no_grad`"
    needs = Needs(where={"mechanism": ("no_grad",)}, columns=("time_ratio",))

    def _pairs(self, f: Facts) -> list[tuple[Row, Row]]:
        """Valid ``no_grad`` cases with the valid ``requires_grad`` case of the same setup."""
        valid = [r for r in self.rows(f) if r["validity"] == "valid"]
        rg = [r for r in f.where(mechanism="requires_grad") if r["validity"] == "valid"]
        return pairs(valid, rg)

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        text = f"{plural(len(rows), 'case')}: {validity_summary(rows)}."
        both = self._pairs(f)
        if both:
            time_q = fmt_ratio(median(quotients(both, "time_ratio")))
            peak_q = fmt_ratio(median(quotients(both, "peak_memory_bytes")))
            text += (
                f" Where valid it cost what `requires_grad` does: {time_q} its time and {peak_q} "
                f"its peak memory (medians over {plural(len(both), 'pair')})."
            )
        else:
            text += f" Step time {dist(values(rows, 'time_ratio'), fmt_ratio)} {OF_BASE}."
        return text

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No `no_grad` case was measured in this run. Run the sweep with "
                "`--bench-mechanism no_grad` (baselines come with it) to answer this question."
            ]
        lines = [
            f"`no_grad` was measured in {plural(len(rows), 'case')}: "
            f"{validity_summary(rows)}.{example_detail(rows)}",
            "",
        ]
        for pattern in pattern_label_order(rows):
            for scope in sorted({f.scope(r) for r in rows}):
                sub = [r for r in rows if r["pattern_label"] == pattern and f.scope(r) == scope]
                if not sub:
                    continue
                lines.append(
                    f"- {scope}**{pattern}** ({plural(len(sub), 'case')}, "
                    f"{validity_summary(sub, patterns=False)}): "
                    f"{metric('step time', values(sub, 'time_ratio'), fmt_ratio, OF_BASE)}; "
                    f"{metric('peak memory', values(sub, 'peak_ratio'), fmt_ratio)}; "
                    + metric(
                        "activations saved for backward (the graph's memory)",
                        values(sub, "saved_activation_ratio"),
                        fmt_pct,
                        OF_BASE,
                    )
                    + f"; {metric('backward FLOPs', values(sub, 'flops_backward_ratio'), fmt_pct)}."
                )
        both = self._pairs(f)
        if both:
            lines += [
                "",
                f"Against `requires_grad` on the same cases (both valid, "
                f"{plural(len(both), 'pair')}): `no_grad`'s "
                + metric(
                    "time ratio was",
                    quotients(both, "time_ratio"),
                    fmt_ratio,
                    "of `requires_grad`'s",
                    "pair",
                )
                + ", and its "
                + metric("peak memory", quotients(both, "peak_memory_bytes"), fmt_ratio, "", "pair")
                + ".",
            ]
        return lines
