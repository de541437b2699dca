"""Backprop with frozen blocks in the middle (pattern ``middle``)."""

from __future__ import annotations

from ..format import NOT_MEASURED, OF_BASE, code, dist, fmt_pct, fmt_ratio, metric, plural, values
from ..results import mechanism_order
from . import Facts, Finding, Needs, register
from .common import cut_and_cheapest, example_detail, validity_summary


@register
class Middle(Finding):
    name = "middle"
    order = 30
    title = "Backprop with frozen blocks in the middle (pattern `middle`)"
    label = "Frozen blocks in the middle"
    needs = Needs(where={"pattern": ("middle",)}, columns=("time_ratio",))

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        text = cut_and_cheapest(rows, f.validity_measured)
        rg = [r for r in rows if r["mechanism"] == "requires_grad" and r["validity"] == "valid"]
        skipped = [1 - v for v in values(rg, "flops_backward_ratio")]
        if skipped:
            text += (
                f" `requires_grad` skipped only the frozen blocks' weight gradients: "
                f"{dist(skipped, fmt_pct)} of the backward FLOPs."
            )
        return text

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            skipped = [s for s in f.skipped if "middle" in s["id"]]
            text = "No case with pattern `middle` was measured in this run."
            if skipped:
                text += (
                    " Skipped: "
                    + "; ".join(f"{code(s['id'])} ({s['reason']})" for s in skipped)
                    + "."
                )
            return [text + " Run with `--bench-pattern none,middle` at depth ≥ 3."]
        lines = [
            f"Pattern `middle` (frozen blocks with trainable blocks before and after them) was "
            f"measured in {plural(len(rows), 'case')}. Per mechanism, against the baseline:",
            "",
        ]
        for mech in mechanism_order(r["mechanism"] for r in rows):
            for scope in sorted({f.scope(r) for r in rows}):
                sub = [r for r in rows if r["mechanism"] == mech and f.scope(r) == scope]
                if not sub:
                    continue
                lines.append(
                    f"- {scope}**{mech}** ({validity_summary(sub, patterns=False)}): "
                    + metric(
                        "backward FLOPs", values(sub, "flops_backward_ratio"), fmt_pct, OF_BASE
                    )
                    + "; "
                    f"{metric('backward time', values(sub, 'backward_ratio'), fmt_ratio)}; "
                    f"{metric('step time', values(sub, 'time_ratio'), fmt_ratio)}."
                    f"{example_detail(sub)}"
                )
        cut = [r for r in rows if r.get("verdict") == "graph_cut"]
        rg = [r for r in rows if r["mechanism"] == "requires_grad" and r["validity"] == "valid"]
        skipped_cut = [1 - v for v in values(cut, "flops_backward_ratio")]
        skipped_rg = [1 - v for v in values(rg, "flops_backward_ratio")]
        lines.append("")
        cut_mechanisms = mechanism_order(r["mechanism"] for r in cut)
        if cut and skipped_cut:
            lines.append(
                f"The graph-cutting cases ({', '.join(code(m) for m in cut_mechanisms)}) "
                f"skipped {dist(skipped_cut, fmt_pct)} of the baseline's backward FLOPs: nothing "
                f"before the frozen blocks was back-propagated, so the trainable blocks there got "
                f"no gradient."
            )
        if rg and skipped_rg:
            lines.append(
                f"`requires_grad` skipped {dist(skipped_rg, fmt_pct)} of the backward FLOPs: the "
                f"frozen blocks' weight gradients (dW), while the input gradient (dX) still flows "
                f"through them to the trainable blocks before."
            )
        if not (cut and skipped_cut) and not (rg and skipped_rg):
            lines.append(f"Backward FLOPs or verdicts were {NOT_MEASURED}.")
        return lines
