"""Which mechanism is the cheapest valid way to freeze, and why a trap never is.

Only valid cases with a time ratio are ever ranked, and never a trap mechanism
(:data:`bench_lib.vocab.TRAP_MECHANISMS`): a trap that passed the validity check in one case
passed by luck of that case (:data:`TRAP_FRAGILITY` says which luck), so the report says so
instead of recommending it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from ..vocab import TRAP_MECHANISMS
from .format import Row, code, fmt_ratio, values
from .results import is_missing, mechanism_order

__all__ = [
    "TRAP_FRAGILITY",
    "Choice",
    "candidates",
    "cheapest",
    "is_trap",
    "tied",
    "ties_text",
    "trap_notes",
    "valid_traps",
]

#: Why a trap mechanism that passed the validity check in some case is still no way to freeze.
TRAP_FRAGILITY: dict[str, str] = {
    "zeroed_grad_in_optimizer": (
        "its frozen parameters stay in the optimizer with zeroed gradients, so weight decay and "
        "momentum still move them; it passes only where neither happened to act in the checked "
        "steps"
    ),
    "late_freeze": (
        "the step before the freeze leaves optimizer state (momentum, Adam's moments) that keeps "
        "moving the frozen parameters; it passes only where that state happened to be zero"
    ),
    "inference_mode_nocopy": (
        "it passes only because no later op saved the inference-mode output for backward; "
        "whether one does depends on the model (the next layer of the MLP and the CNN does, and "
        "the step raises), so a change to what follows the frozen blocks breaks it"
    ),
}


def is_trap(mechanism: Any) -> bool:
    return str(mechanism) in TRAP_MECHANISMS


def candidates(rows: Iterable[Row]) -> list[Row]:
    """The rows that may be ranked: valid, with a time ratio, and not a trap."""
    return [
        r
        for r in rows
        if r.get("validity") == "valid"
        and not is_missing(r.get("time_ratio"))
        and not is_trap(r.get("mechanism"))
    ]


def valid_traps(rows: Iterable[Row]) -> list[Row]:
    """Trap cases that passed the validity check (by luck of the case)."""
    return [r for r in rows if r.get("validity") == "valid" and is_trap(r.get("mechanism"))]


def tied(best: Row, valid: list[Row]) -> list[str]:
    """Mechanisms of ``valid`` (other than ``best``'s) whose interval reaches below the top of
    ``best``'s interval: the data cannot tell them from the winner. Traps are never named."""
    high: Any = best.get("time_ratio_ci_high")
    if is_missing(high):
        return []
    return [
        str(r["mechanism"])
        for r in valid
        if r["mechanism"] != best["mechanism"]
        and not is_trap(r["mechanism"])
        and not is_missing(r.get("time_ratio_ci_low"))
        and float(r["time_ratio_ci_low"]) <= float(high)
    ]


def ties_text(best: Row, valid: list[Row]) -> str:
    ties = tied(best, valid)
    if not ties:
        return ""
    return f" Within the noise of it (overlapping intervals): {', '.join(map(code, ties))}."


def trap_notes(rows: Iterable[Row], where: Callable[[Row], str] = lambda r: "") -> list[str]:
    """One sentence per trap mechanism that passed in ``rows``: where (``where(row)`` names a
    case), at which time ratio, and why that is fragile."""
    by_mechanism: dict[str, list[Row]] = {}
    for r in valid_traps(rows):
        by_mechanism.setdefault(str(r["mechanism"]), []).append(r)
    out = []
    for mech in mechanism_order(by_mechanism):
        cases = ", ".join(
            f"{where(r)}{fmt_ratio(r.get('time_ratio'))}".strip() for r in by_mechanism[mech]
        )
        out.append(
            f"`{mech}` passed the validity check here ({cases}) but is a trap, never ranked: "
            f"{TRAP_FRAGILITY.get(mech, 'it is wrong in other settings')}."
        )
    return out


@dataclass(frozen=True)
class Choice:
    """The cheapest valid mechanism of a group of cases (see :func:`cheapest`)."""

    mechanism: str
    valid: list[Row]
    cases: int
    time_ratio: float
    peak_ratio: float

    def _valid_in(self) -> str:
        return f"valid in {len(self.valid)} of {self.cases}" if len(self.valid) < self.cases else ""

    def cell(self) -> str:
        """``"`requires_grad` 0.88× time, 0.97× memory (valid in 2 of 3)"``: a table cell."""
        text = (
            f"`{self.mechanism}` {fmt_ratio(self.time_ratio)} time, "
            f"{fmt_ratio(self.peak_ratio)} memory"
        )
        return text + (f" ({self._valid_in()})" if self._valid_in() else "")

    def sentence(self) -> str:
        """``"`requires_grad`, a median 0.88× the baseline's time and 0.97× its peak memory"``."""
        text = (
            f"`{self.mechanism}`, a median {fmt_ratio(self.time_ratio)} the baseline's time and "
            f"{fmt_ratio(self.peak_ratio)} its peak memory"
        )
        return text + (f" ({self._valid_in()} of its cases)" if self._valid_in() else "")


def cheapest(rows: Iterable[Row]) -> Choice | None:
    """The non-trap mechanism of ``rows`` (baselines left out) that was valid in the largest
    share of its cases, and of those the one with the lowest median time ratio over its valid
    cases; its peak ratio is the median over the same cases. None when no case is valid.

    A mechanism valid in only some cases (e.g. BatchNorm blocks frozen in train mode) is ranked
    on the cases where it was valid and says in how many of its cases that was.
    """
    by_mechanism: dict[str, list[Row]] = {}
    for r in rows:
        if r.get("mechanism") != "none" and not is_trap(r.get("mechanism")):
            by_mechanism.setdefault(str(r["mechanism"]), []).append(r)
    choices = []
    for mech, cases in by_mechanism.items():
        valid = candidates(cases)
        if valid:
            peaks = values(valid, "peak_ratio")
            choices.append(
                Choice(
                    mech,
                    valid,
                    len(cases),
                    float(np.median(values(valid, "time_ratio"))),
                    float(np.median(peaks)) if peaks else float("nan"),
                )
            )
    if not choices:
        return None
    return min(choices, key=lambda c: (-Fraction(len(c.valid), c.cases), c.time_ratio))
