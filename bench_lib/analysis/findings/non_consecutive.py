"""Non-consecutive frozen layers (patterns ``alternating`` and ``explicit``)."""

from __future__ import annotations

import numpy as np

from ..format import fmt_ratio, metric, plural, values
from ..ranking import is_trap
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
    title = "4. Non-consecutive frozen layers (patterns `alternating` and `explicit`)"
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
            best: tuple[float, str] | None = None
            for mech in mechanism_order(r["mechanism"] for r in rows):
                sub = [r for r in rows if r["mechanism"] == mech]
                valid = [r for r in sub if r["validity"] == "valid"]
                lines.append(
                    f"  - `{mech}`: {validity_summary(sub, patterns=False)}; "
                    f"{metric('step time', values(sub, 'time_ratio'), fmt_ratio)}, "
                    f"{metric('peak memory', values(sub, 'peak_ratio'), fmt_ratio)} (to the "
                    f"baseline's)."
                )
                times = values(valid, "time_ratio")
                if valid and len(valid) == len(sub) and times and not is_trap(mech):
                    med = float(np.median(times))
                    if best is None or med < best[0]:
                        best = (med, mech)
            if best is not None:
                lines.append(
                    f"  - Cheapest mechanism valid in every `{pattern}` case: `{best[1]}`, a "
                    f"median {fmt_ratio(best[0])} of the baseline's step time."
                )
            elif f.validity_measured:
                lines.append(f"  - No mechanism was valid in every `{pattern}` case.")
            lines.append("")
        return lines
