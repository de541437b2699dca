"""Which mechanisms are the cheapest valid ways to freeze, and why a trap never is.

"Cheapest valid" is a *set*, never a single winner picked by a noisy median: every valid
mechanism whose step time is equivalent to the fastest valid one's (:func:`equivalent`, the
one rule), ordered inside the set by the deterministic costs (peak memory, then FLOPs).
:func:`equivalent_set` ranks one decision group (one set-up and frozen setting: the cases that
share a baseline and what is frozen); :func:`decide` ranks a cell that spans several groups
(depths, optimizers): it names the set that is cheapest in most of them and says when the
groups disagree.

Only valid cases with a time ratio are ever ranked, and never a trap mechanism
(:data:`bench_lib.vocab.TRAP_MECHANISMS`): a trap that passed the validity check in one case
passed by luck of that case (:data:`TRAP_FRAGILITY` says which luck), so the report says so
instead of recommending it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..vocab import TRAP_MECHANISMS
from .format import Row, code, fmt_ratio, values
from .results import is_missing, mechanism_order, setup_key

__all__ = [
    "MARGIN",
    "REMEDIES",
    "TRAP_FRAGILITY",
    "Decision",
    "Remedy",
    "candidates",
    "decide",
    "equivalent",
    "equivalent_set",
    "group_key",
    "is_trap",
    "remedy",
    "set_text",
    "touches_margin",
    "trap_notes",
    "valid_traps",
]

#: How far from 1 a direct (pairwise) time ratio may be and still call two members equivalent,
#: once the data carry pairwise intervals (the default margin on CPU).
MARGIN = 0.05

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

#: The columns that make one decision group: the baseline's axes and what is frozen (but not
#: how: the mechanisms of one group are what is ranked).
_GROUP_EXTRA: tuple[str, ...] = ("pattern", "frozen_blocks", "freeze_globs", "frozen_mode")


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


def _float(value: Any) -> float | None:
    return None if is_missing(value) else float(value)


def _pairwise(a: Row, b: Row) -> tuple[float, float] | None:
    """The 95% interval of the direct time ratio ``a / b`` when the record carries one
    (``pair_ratios``: member mechanism -> ``{"ci_low": .., "ci_high": ..}``), else None."""
    table: Any = a.get("pair_ratios")
    if not isinstance(table, dict):
        return None
    entry = table.get(str(b.get("mechanism")))
    if not isinstance(entry, dict):
        return None
    low, high = _float(entry.get("ci_low")), _float(entry.get("ci_high"))
    return None if low is None or high is None else (low, high)


def _margin(row: Row, default: float) -> float:
    """The record's own margin (its decision group's), else ``default``."""
    m = _float(row.get("margin"))
    return default if m is None else m


def equivalent(a: Row, b: Row, margin: float = MARGIN) -> bool:
    """Whether the data cannot tell ``a``'s step time from ``b``'s: the one rule of ties.

    With a direct interval of ``a / b`` (both timed in the same rounds of their decision group)
    the two are equivalent when it lies inside ``1 ± margin`` (the record's margin where it
    has one), distinct when it lies outside that and excludes 1, and not told apart (so kept
    together: no winner by noise) when it is wider than the margin and holds 1 (a group
    stopped by its time cap). Without one, they are equivalent when their intervals of the
    time ratio to the baseline overlap; a case without an interval is equivalent only to a case
    of the same time ratio.
    """
    direct = _pairwise(a, b)
    if direct is not None:
        m = _margin(a, margin)
        if 1 - m <= direct[0] and direct[1] <= 1 + m:
            return True
        return not (direct[1] < 1 or direct[0] > 1)
    la, ha = _float(a.get("time_ratio_ci_low")), _float(a.get("time_ratio_ci_high"))
    lb, hb = _float(b.get("time_ratio_ci_low")), _float(b.get("time_ratio_ci_high"))
    if la is None or ha is None or lb is None or hb is None:
        return _float(a.get("time_ratio")) == _float(b.get("time_ratio"))
    return la <= hb and lb <= ha


def touches_margin(a: Row, b: Row, margin: float = MARGIN) -> bool:
    """Whether the direct interval of ``a / b`` crosses ``1 - margin`` or ``1 + margin``, or
    holds 1 while wider than the margin: a pair whose call (equivalent, distinct) another run
    may make the other way. False without a direct interval."""
    direct = _pairwise(a, b)
    if direct is None:
        return False
    m = _margin(a, margin)
    low, high = direct
    crosses = any(low < edge < high for edge in (1 - m, 1 + m))
    return crosses or (low <= 1 <= high and not (1 - m <= low and high <= 1 + m))


def _cost(row: Row) -> tuple[float, float, str]:
    """The deterministic costs a set is ordered by: peak memory, then FLOPs (unknown last)."""
    peak = _float(row.get("peak_memory_bytes"))
    flops = _float(row.get("flops_ratio"))
    return (
        math.inf if peak is None else peak,
        math.inf if flops is None else flops,
        str(row.get("mechanism")),
    )


def equivalent_set(rows: Iterable[Row]) -> list[Row]:
    """The cheapest valid members of one decision group: every candidate (valid, timed, not a
    trap, not the baseline) equivalent to the fastest, ordered by peak memory, then FLOPs.
    Empty when nothing is valid."""
    valid = [r for r in candidates(rows) if r.get("mechanism") != "none"]
    if not valid:
        return []
    fastest = min(valid, key=lambda r: float(r["time_ratio"]))
    return sorted((r for r in valid if equivalent(r, fastest)), key=_cost)


def group_key(row: Row) -> tuple[Any, ...]:
    """A decision group's key: the baseline's axes and the frozen setting."""
    return (*setup_key(row), *setup_key(row, _GROUP_EXTRA))


@dataclass(frozen=True)
class Decision:
    """The equivalent set named for a cell of one or more decision groups (see :func:`decide`).

    ``members`` are in cost order (peak memory, then FLOPs, in the cell's typical group);
    ``agree`` of ``groups`` groups named exactly this set; ``time_ratio`` and ``peak_ratio`` are
    medians over the valid cases of the set's first member in the cell (``cases`` of them).
    """

    members: tuple[str, ...]
    agree: int
    groups: int
    time_ratio: float
    peak_ratio: float
    cases: int
    #: Of the ``agree`` groups, how many named a set of several members without resolving
    #: (stopped by their cap: the members are kept together because the rounds could not tell
    #: them apart, not because they were shown the same).
    unresolved: int = 0

    @property
    def disagree(self) -> bool:
        return self.agree < self.groups

    def caveat(self, short: bool = False) -> str:
        """``""``, or ``"not resolved"`` / ``"not resolved in 2 of 3"`` for a tie by noise
        (``short``: ``"unresolved"`` / ``"2 unresolved"``, for the first screen's word
        budget)."""
        if not self.unresolved:
            return ""
        if self.unresolved == self.agree:
            return "unresolved" if short else "not resolved"
        if short:
            return f"{self.unresolved} unresolved"
        return f"not resolved in {self.unresolved} of {self.agree}"

    def names(self) -> str:
        """``"`requires_grad` = `no_grad`"``: the set, cheapest first."""
        return " = ".join(code(m) for m in self.members)

    def agreement(self) -> str:
        """``""``, or ``"in 2 of 3 groups"`` when the groups disagree."""
        return f"in {self.agree} of {self.groups} groups" if self.disagree else ""

    def cell(self) -> str:
        """``"`requires_grad` = `no_grad` 0.68× time, 0.65× memory (in 2 of 3 groups)"``."""
        text = (
            f"{self.names()} {fmt_ratio(self.time_ratio)} time, {fmt_ratio(self.peak_ratio)} memory"
        )
        notes = [n for n in (self.agreement(), self.caveat()) if n]
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def sentence(self) -> str:
        """``"`requires_grad` (equivalent: `no_grad`), a median 0.88× the baseline's time and
        0.97× its peak memory"``."""
        first, *rest = self.members
        text = code(first) + (f" (equivalent: {', '.join(code(m) for m in rest)})" if rest else "")
        text += (
            f", a median {fmt_ratio(self.time_ratio)} the baseline's time and "
            f"{fmt_ratio(self.peak_ratio)} its peak memory"
        )
        return text + (f" (cheapest {self.agreement()})" if self.disagree else "")


def decide(rows: Iterable[Row], key: Callable[[Row], Any] = group_key) -> Decision | None:
    """The equivalent set of a cell spanning the decision groups of ``rows`` (by ``key``): the
    set that is cheapest in most groups (ties between sets go to the one whose members are
    valid in more groups, then the cheaper one). None when no group has a valid member."""
    groups: dict[Any, list[Row]] = {}
    for r in rows:
        if r.get("mechanism") != "none":
            groups.setdefault(key(r), []).append(r)
    sets = {k: tuple(str(r["mechanism"]) for r in equivalent_set(g)) for k, g in groups.items()}
    named = Counter(frozenset(s) for s in sets.values() if s)
    if not named:
        return None
    all_valid = [r for g in groups.values() for r in candidates(g)]
    support = Counter(str(r["mechanism"]) for r in all_valid)
    best = max(named, key=lambda s: (named[s], sum(support[m] for m in s), -len(s)))
    # The members in the order of the groups that named the set (the most common order).
    orders = Counter(s for s in sets.values() if frozenset(s) == best)
    members = orders.most_common(1)[0][0]
    lead = [r for r in all_valid if r["mechanism"] == members[0]]
    peaks = values(lead, "peak_ratio")
    unresolved = sum(
        1
        for k, s in sets.items()
        if frozenset(s) == best
        and len(s) > 1
        and any(r.get("resolved") is False for r in groups[k])
    )
    return Decision(
        members,
        named[best],
        len(groups),
        float(np.median(values(lead, "time_ratio"))),
        float(np.median(peaks)) if peaks else math.nan,
        len(lead),
        unresolved,
    )


def set_text(rows: Sequence[Row]) -> str:
    """``"requires_grad = no_grad (0.68×)"``: an :func:`equivalent_set` of one group, with its
    first member's time ratio; empty for an empty set."""
    if not rows:
        return ""
    names = " = ".join(str(r["mechanism"]) for r in rows)
    return f"{names} ({fmt_ratio(rows[0]['time_ratio'])})"


@dataclass(frozen=True)
class Remedy:
    """A known cure for an invalid verdict: what to do (``cure``), the cases that measure it
    (``axis`` set to ``value``, everything else alike), and what the cure changes (``note``)."""

    cure: str
    axis: str
    value: Any
    note: str

    def cases(self, rows: Iterable[Row]) -> list[Row]:
        """The rows of ``rows`` that measure the cure."""
        return [r for r in rows if r.get(self.axis) == self.value]


#: Invalid verdicts with a known cure, by verdict.
REMEDIES: dict[str, Remedy] = {
    "frozen_buffer_changed": Remedy(
        cure="frozen blocks in eval mode",
        axis="frozen_mode",
        value="eval",
        note=(
            "eval mode changes the forward: BatchNorm normalizes with its running statistics "
            "instead of the batch's"
        ),
    ),
}


def remedy(rows: Iterable[Row]) -> Remedy | None:
    """The cure of the most common curable verdict among the invalid, non-trap rows."""
    verdicts = Counter(
        str(r.get("verdict"))
        for r in rows
        if r.get("validity") == "invalid" and not is_trap(r.get("mechanism"))
    )
    for verdict, _ in verdicts.most_common():
        if verdict in REMEDIES:
            return REMEDIES[verdict]
    return None


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
