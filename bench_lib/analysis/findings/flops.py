"""Time against FLOPs: does a frozen case's step time follow its share of the arithmetic?"""

from __future__ import annotations

from matplotlib.figure import Figure

from .. import plots
from ..format import NOT_MEASURED, Row, dist
from ..results import NOISE_THRESHOLD, has_adapter, is_missing
from . import Facts, Finding, Needs, register

_FIGURE = "time-vs-flops.png"


def _quotients(rows: list[Row]) -> list[float]:
    """Time ratio over FLOP ratio of every frozen case that has both."""
    return [
        float(r["time_ratio"]) / float(r["flops_ratio"])
        for r in rows
        if not is_missing(r.get("time_ratio"))
        and not is_missing(r.get("flops_ratio"))
        and float(r["flops_ratio"]) > 0
    ]


def _off(q: list[float]) -> tuple[int, int]:
    """How many quotients lie above and below 1 by more than the noise threshold."""
    return sum(v > 1 + NOISE_THRESHOLD for v in q), sum(v < 1 - NOISE_THRESHOLD for v in q)


@register
class Flops(Finding):
    name = "flops"
    order = 60
    title = "Time against FLOPs"
    label = "Time against FLOPs"
    needs = Needs(exclude={"mechanism": ("none",)}, columns=("flops_ratio", "time_ratio"))

    def summary(self, f: Facts) -> str:
        q = _quotients(self.rows(f))
        above, below = _off(q)
        return (
            f"time ratio over FLOP ratio {dist(q, lambda v: f'{v:.2f}')}; {above} took more than "
            f"{NOISE_THRESHOLD:.0%} more time than their FLOPs predict, {below} more than "
            f"{NOISE_THRESHOLD:.0%} less."
        )

    def _has_flops(self, f: Facts) -> bool:
        return any(not is_missing(r.get("flops_ratio")) for r in f.ok)

    def figures(self, f: Facts) -> dict[str, Figure]:
        if not self._has_flops(f):
            return {}
        frame = f.frame[[not has_adapter(r) for r in f.frame.to_dict("records")]]
        return {
            _FIGURE: plots.ratio_vs_flops(
                frame, "Measured time ratio against FLOP ratio (both to the baseline)"
            )
        }

    def detail(self, f: Facts) -> list[str]:
        if not self._has_flops(f):
            return [f"FLOPs were {NOT_MEASURED}."]
        lines = []
        q = _quotients(self.rows(f))
        if q:
            above, below = _off(q)
            lines += [
                f"Time ratio over FLOP ratio, per frozen case: {dist(q, lambda v: f'{v:.2f}')}. "
                f"{above} of {len(q)} cases took more than {NOISE_THRESHOLD:.0%} more time than "
                f"their FLOPs predict, {below} more than {NOISE_THRESHOLD:.0%} less.",
                "",
            ]
        return [
            *lines,
            "Points on the dashed line y = x cost exactly their share of FLOPs; above it, a "
            "case spends time beyond its arithmetic (overheads, memory traffic).",
            "",
            f"![Measured time ratio against FLOP ratio]({_FIGURE})",
        ]
