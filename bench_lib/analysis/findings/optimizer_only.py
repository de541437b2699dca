"""Is freezing X needed when only Y is in the optimizer? (``optimizer_only`` against
``requires_grad``)"""

from __future__ import annotations

import math

from ..format import NOT_MEASURED, Row, code, fmt_ratio, median, metric, plural
from . import Facts, Finding, Needs, register
from .common import example_detail, pairs, quotients, validity_summary


def _valid(rows: list[Row]) -> int:
    return sum(r["validity"] == "valid" for r in rows)


@register
class OptimizerOnly(Finding):
    name = "optimizer_only"
    order = 20
    title = (
        "Is freezing X needed when only Y is in the optimizer? (`optimizer_only` against "
        "`requires_grad`)"
    )
    label = "Freezing X when only Y is optimized (`optimizer_only`)"
    needs = Needs(where={"mechanism": ("optimizer_only",)}, columns=("time_ratio",))

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        both = pairs(rows, f.where(mechanism="requires_grad"))
        if not both:
            return f"{validity_summary(rows)}; no `requires_grad` case to compare it with."
        oo, rg = [a for a, _ in both], [b for _, b in both]
        needed = sum(a["validity"] == "invalid" and b["validity"] == "valid" for a, b in both)
        text = (
            f"valid in {_valid(oo)} of {len(both)} cases, `requires_grad` in {_valid(rg)} of the "
            f"same {len(both)}; freezing X was needed for correctness in {needed} of them"
            if f.validity_measured
            else f"{len(both)} cases, validity {NOT_MEASURED}"
        )
        time_q = fmt_ratio(median(quotients(both, "time_ratio")))
        peak_q = fmt_ratio(median(quotients(both, "peak_memory_bytes")))
        return (
            f"{text}. Not freezing X took {time_q} the time and {peak_q} the peak memory of "
            f"`requires_grad` (medians over {plural(len(both), 'pair')})."
        )

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No `optimizer_only` case was measured in this run (X left with requires_grad "
                "on, only Y in the optimizer). Run with "
                "`--bench-mechanism optimizer_only,requires_grad`."
            ]
        lines = [
            f"`optimizer_only` (X keeps requires_grad, only Y's parameters are in the optimizer) "
            f"was measured in {plural(len(rows), 'case')}: {validity_summary(rows)}."
            f"{example_detail(rows)}"
        ]
        both = pairs(rows, f.where(mechanism="requires_grad"))
        if not both:
            lines += ["", "No `requires_grad` case matches them, so the cost cannot be compared."]
            return lines
        rg = [b for _, b in both]
        lines += [
            "",
            f"- Correctness, on the same {plural(len(both), 'case')}: `requires_grad` "
            f"{validity_summary(rg)}; `optimizer_only` "
            f"{validity_summary([a for a, _ in both])}.",
            "- Time: "
            + metric(
                "`optimizer_only`'s step took",
                quotients(both, "time_ratio"),
                fmt_ratio,
                "the time of `requires_grad`'s (ratio of their time ratios to the same baseline)",
                "pair",
            )
            + ".",
            "- Memory, against `requires_grad`: "
            + "; ".join(
                metric(label, quotients(both, column), fmt_ratio, "", "pair")
                for label, column in (
                    ("peak", "peak_memory_bytes"),
                    ("gradients held", "grad_bytes"),
                    ("optimizer state", "optimizer_state_bytes"),
                )
            )
            + ".",
            "- Work: "
            + metric(
                "backward FLOPs",
                quotients(both, "flops_backward"),
                fmt_ratio,
                "of `requires_grad`'s",
                "pair",
            )
            + ".",
            "",
        ]
        lines.append(_conclusion(both))
        return lines


def _conclusion(both: list[tuple[Row, Row]]) -> str:
    """The verdict of the question from (optimizer_only, requires_grad) pairs of one case each.

    Freezing X is *needed* where optimizer_only is invalid and requires_grad valid; where both
    are invalid, freezing X's parameters does not fix the case (e.g. BatchNorm statistics in
    train mode); where optimizer_only is valid, freezing X is a matter of cost only.
    """
    known = [(a, b) for a, b in both if a["validity"] in ("valid", "invalid")]
    if not known:
        return f"**So:** validity was {NOT_MEASURED}, so only the cost can be judged from it."
    needed = [a for a, b in known if a["validity"] == "invalid" and b["validity"] == "valid"]
    neither = [a for a, b in known if a["validity"] == "invalid" and b["validity"] != "valid"]
    enough = [(a, b) for a, b in known if a["validity"] == "valid"]
    parts = []
    if enough:
        cost = median(quotients(enough, "time_ratio")) - 1
        how = (
            f"{abs(cost):.0%} {'more' if cost >= 0 else 'less'} step time than freezing it"
            if math.isfinite(cost)
            else f"a step time {NOT_MEASURED}"
        )
        parts.append(
            f"in {len(enough)} of {len(known)} cases leaving X out of the optimizer was enough "
            f"for correctness, so freezing X (`requires_grad`) is a matter of cost there: not "
            f"freezing it took a median {how}"
        )
    if needed:
        cases = ", ".join(f"{code(r['case_id'])} (✗ {r.get('verdict')})" for r in needed)
        parts.append(
            f"in {len(needed)} of {len(known)} freezing X was needed for correctness: {cases}"
        )
    if neither:
        cases = ", ".join(f"{code(r['case_id'])} (✗ {r.get('verdict')})" for r in neither)
        parts.append(
            f"in {len(neither)} of {len(known)} neither was correct, so freezing X's parameters "
            f"does not fix them: {cases}"
        )
    return "**So:** " + "; ".join(parts) + "."
