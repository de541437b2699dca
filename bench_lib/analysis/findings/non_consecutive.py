"""Non-consecutive frozen layers (patterns ``alternating`` and ``explicit``)."""

from __future__ import annotations

from ..format import fmt_ratio, metric, plural, values
from ..ranking import decide
from ..results import mechanism_order
from ..setups import blocks
from . import Facts, Finding, Needs, register
from .common import cut_and_cheapest, validity_summary

_PATTERNS = ("alternating", "explicit")
_HINTS = {
    "alternating": "`--bench-pattern none,alternating`",
    "explicit": "`--bench-blocks 1,3` (any non-consecutive indices)",
}


@register
class NonConsecutive(Finding):
    name = "non_consecutive"
    order = 40
    title = "Non-consecutive frozen layers (patterns `alternating` and `explicit`)"
    label = "Non-consecutive frozen blocks (`alternating`, `explicit`)"
    needs = Needs(where={"pattern": _PATTERNS}, columns=("time_ratio",))

    def summary(self, f: Facts) -> str:
        return cut_and_cheapest(self.rows(f), f.validity_measured)

    def detail(self, f: Facts) -> list[str]:
        lines: list[str] = []
        for pattern in _PATTERNS:
            rows = f.where(pattern=pattern)
            if not rows:
                lines += [f"- **{pattern}**: no case in this run; run with {_HINTS[pattern]}.", ""]
                continue
            where = sorted({(int(r["depth"]), blocks(r)) for r in rows})
            frozen = "; ".join(f"blocks {b} of depth {d}" for d, b in where)
            lines.append(f"- **{pattern}** ({frozen}; {plural(len(rows), 'case')}):")
            for mech in mechanism_order(r["mechanism"] for r in rows):
                sub = [r for r in rows if r["mechanism"] == mech]
                lines.append(
                    f"  - `{mech}`: {validity_summary(sub, patterns=False)}; "
                    f"{metric('step time', values(sub, 'time_ratio'), fmt_ratio)}, "
                    f"{metric('peak memory', values(sub, 'peak_ratio'), fmt_ratio)} (to the "
                    f"baseline's)."
                )
            best = decide(rows)
            if best is not None:
                lines.append(f"  - Cheapest valid set for `{pattern}`: {best.sentence()}.")
            elif f.validity_measured:
                lines.append(f"  - No mechanism was valid in any `{pattern}` case.")
            lines.append("")
        return lines
