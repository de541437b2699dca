"""Which freeze mechanisms make ``torch.compile`` recompile (or break its graph)?

Counted by the suite over each compiled case's own first steps and timed rounds: frames dynamo
compiled, graph breaks, and recompiles (compiles of a frame compiled before, whose earlier code
no longer passed its guards). A compile that failed, compiled nothing or hit dynamo's recompile
limit is a failed case, listed with its message.
"""

from __future__ import annotations

from typing import Any

from ..format import Row, code, fmt_seconds, join, median, plural, table, values
from ..results import is_missing, mechanism_order
from . import Facts, Finding, Needs, register


def _name(mechanism: str) -> str:
    return "the baseline" if mechanism == "none" else code(mechanism)


def _count(row: Row, column: str) -> int:
    value: Any = row.get(column)
    return 0 if is_missing(value) else int(value)


@register
class Recompiles(Finding):
    name = "compile_recompiles"
    order = 91
    title = "Which freeze mechanisms make `torch.compile` recompile?"
    label = "Recompiles under `torch.compile`"
    needs = Needs(where={"compile": ("on",)}, columns=("recompiles",), failed=True, step_axes=True)

    def _ok(self, f: Facts) -> list[Row]:
        return [r for r in self.rows(f) if r["status"] == "ok"]

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        ok = self._ok(f)
        parts = []
        calm = []
        for mech in mechanism_order(r["mechanism"] for r in ok):
            sub = [r for r in ok if r["mechanism"] == mech]
            hit = [r for r in sub if _count(r, "recompiles") > 0]
            if hit:
                parts.append(
                    f"{_name(mech)} recompiled in {len(hit)} of {plural(len(sub), 'case')} "
                    f"({plural(sum(_count(r, 'recompiles') for r in hit), 'recompile')})"
                )
            else:
                calm.append(_name(mech))
        if calm:
            parts.append(f"{join(calm)} never did")
        breaks = sum(_count(r, "graph_breaks") for r in ok)
        text = "; ".join(parts) + f"; {plural(breaks, 'graph break')} in {len(ok)} compiled cases"
        failed = [r for r in rows if r["status"] != "ok"]
        if failed:
            text += f"; {len(failed)} failed ({join([_name(r['mechanism']) for r in failed])})"
        return text + "."

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No compiled case was measured in this run (`--bench-compile on`; the `quick` "
                "and `default` profiles hold a compiled grid)."
            ]
        ok = self._ok(f)
        cells = []
        for mech in mechanism_order(r["mechanism"] for r in rows):
            sub = [r for r in ok if r["mechanism"] == mech]
            bad = [r for r in rows if r["mechanism"] == mech and r["status"] != "ok"]
            cells.append(
                [
                    _name(mech),
                    str(len(sub)),
                    str(sum(_count(r, "recompiles") for r in sub)),
                    str(sum(1 for r in sub if _count(r, "recompiles") > 0)),
                    str(sum(_count(r, "graph_breaks") for r in sub)),
                    str(sum(_count(r, "compiled_frames") for r in sub)),
                    fmt_seconds(median(values(sub, "compile_s"))),
                    str(len(bad)),
                ]
            )
        lines = [
            "Per mechanism, over its compiled cases' first steps and timed rounds (the "
            "measurement passes come after the count):",
            "",
            *table(
                [
                    "mechanism",
                    "cases",
                    "recompiles",
                    "cases that recompiled",
                    "graph breaks",
                    "frames compiled",
                    "compile time (median)",
                    "failed",
                ],
                cells,
            ),
            "",
            "A recompile is dynamo compiling a frame again because its compiled code's guards "
            "failed. Dynamo guards on each parameter's `requires_grad`: setting it before the "
            "first step (`requires_grad`) compiles once, a freeze after the first step "
            "(`late_freeze`) recompiles. Frozen blocks under `no_grad` or `inference_mode` are "
            "traced into the same graph (a graph break would show above).",
        ]
        for r in rows:
            if r["status"] != "ok":
                lines += ["", f"- {code(r['case_id'])}: {r.get('status_message')}"]
        return lines
