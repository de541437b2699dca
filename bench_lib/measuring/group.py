"""Decision groups: the baseline and every mechanism of one set-up and frozen pattern, timed in
the same rounds, until precision decides.

A *group* is the cases that share every axis but the mechanism (the baseline, pattern
``none``, is a member of each group of its set-up). The question a group answers is "which
mechanism here", so its members are timed together:

* **Rounds.** Each round times one *value* of every member, in a balanced order (a Williams
  design: every member follows every other equally often across a cycle of orders, so carry-over
  from the previous member cancels), seeded and recorded. A value is :data:`VALUE_STEPS` steps of
  the member, after :data:`WARM_STEPS` untimed steps whenever the member changes (so caches
  carry over equally: a step right after a switch pays the switch, and a 1-step value would pull
  every ratio towards 1). gc is off inside a value and collects between rounds; each step
  synchronizes its device.
* **Pairs.** Any two members form a pair: their per-round ratios, with the median and its 95%
  interval (:func:`~bench_lib.measuring.stats.median_ci`).
* **Stop rule.** At fixed looks (:data:`LOOKS` rounds) the group stops when every *needed* pair
  (the cheapest valid member against each other valid member) has an interval at most
  ``margin`` wide in full ((high - low) / ratio), or when its time cap is spent (then it is
  *unresolved*, with the widths it reached). Then each pair is classified once:
  **equivalent** when its interval lies inside ``1 +/- margin``, **distinct** otherwise (at that
  width a distinct interval excludes 1).

The clock is :class:`~bench_lib.measuring.stats.Clock` (tests replace it with a fake).
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .stats import Clock, median, median_ci

__all__ = [
    "LOOKS",
    "VALUE_STEPS",
    "WARM_STEPS",
    "GroupResult",
    "PairResult",
    "classify",
    "design_label",
    "pair_result",
    "time_group",
    "williams_orders",
]

#: Steps in one timed value of a member, and untimed steps whenever the member changes. Chosen
#: by how well the ratio agrees with long interleaved blocks (see ``docs/measuring.md``).
VALUE_STEPS = 4
WARM_STEPS = 1
#: The rounds at which the stop rule looks (never in between: fewer looks, fewer chances for
#: noise to stop a group early).
LOOKS: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64)


def williams_orders(n: int, seed: int) -> list[list[int]]:
    """A Williams design for ``n`` members: ``n`` orders (``2n`` for odd ``n``) in which each
    member is preceded by every other member equally often; the members' labels are shuffled
    with ``seed``."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    first: list[int] = []
    lo, hi = 0, n - 1
    for i in range(n):
        if i % 2 == 0:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    # The standard construction: row r is the first row shifted by r (mod n).
    orders = [[(x + r) % n for x in first] for r in range(n)]
    if n % 2 == 1:
        orders += [list(reversed(o)) for o in orders]
    labels = list(range(n))
    random.Random(seed).shuffle(labels)
    return [[labels[x] for x in o] for o in orders]


@dataclass(frozen=True)
class PairResult:
    """Member ``a`` over member ``b``: the median of the per-round ratios and its interval."""

    ratio: float
    low: float | None
    high: float | None

    @property
    def width(self) -> float:
        """Full relative width, (high - low) / ratio (infinite without an interval)."""
        if self.low is None or self.high is None:
            return math.inf
        return (self.high - self.low) / self.ratio


def pair_result(a: Sequence[float], b: Sequence[float]) -> PairResult:
    """The pair of two members' per-round values."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    ci = median_ci(ratios)
    return PairResult(median(ratios), ci[0] if ci else None, ci[1] if ci else None)


def classify(pair: PairResult, margin: float) -> str:
    """``equivalent`` (interval inside 1 +/- margin), ``distinct`` (otherwise, with an
    interval), or ``unknown`` (no interval)."""
    if pair.low is None or pair.high is None:
        return "unknown"
    if 1 - margin <= pair.low and pair.high <= 1 + margin:
        return "equivalent"
    return "distinct"


@dataclass
class GroupResult:
    """What the group's rounds gave: each member's per-round values (seconds per step), the
    rounds, whether the needed pairs resolved, the widest needed pair, and the design."""

    names: list[str]
    values: dict[str, list[float]]
    rounds: int
    resolved: bool
    widest: float
    design: str
    seconds: float
    needed: list[tuple[str, str]] = field(default_factory=list)

    def pair(self, a: str, b: str) -> PairResult:
        return pair_result(self.values[a], self.values[b])


def design_label(seed: int, margin: float, cap_s: float) -> str:
    return (
        f"williams seed {seed}; values of {VALUE_STEPS} steps after {WARM_STEPS} warm step(s) "
        f"at each switch; looks at {','.join(map(str, LOOKS))} rounds; margin {margin:g}; "
        f"cap {cap_s:g} s"
    )


def needed_pairs(
    names: Sequence[str], values: Mapping[str, Sequence[float]], valid: Mapping[str, bool]
) -> list[tuple[str, str]]:
    """The pairs the decision needs: the cheapest valid member (lowest median value) against
    each other valid member."""
    ok = [n for n in names if valid.get(n, False)]
    if len(ok) < 2:
        return []
    cheapest = min(ok, key=lambda n: median(values[n]))
    return [(n, cheapest) for n in ok if n != cheapest]


def time_group(
    steps: Mapping[str, Callable[[], object]],
    valid: Mapping[str, bool],
    *,
    margin: float,
    cap_s: float,
    seed: int = 0,
    looks: Sequence[int] = LOOKS,
    min_rounds: int | None = None,
) -> GroupResult:
    """Time the members ``steps`` (name -> one step, device-synchronized) in rounds until the
    needed pairs resolve at ``margin`` or ``cap_s`` seconds pass (checked at each look; the
    first look always completes). ``valid`` says which members may be recommended (only they
    make needed pairs). ``min_rounds`` (default: the first look) is the least rounds run."""
    names = list(steps)
    orders = williams_orders(len(names), seed)
    values: dict[str, list[float]] = {n: [] for n in names}
    start = Clock.now()
    first_look = min_rounds if min_rounds is not None else looks[0]
    resolved = False
    widest = math.inf
    needed: list[tuple[str, str]] = []
    rounds = 0
    gc_was = gc.isenabled()
    try:
        while True:
            order = orders[rounds % len(orders)]
            gc.disable()
            for i in order:
                name = names[i]
                step = steps[name]
                for _ in range(WARM_STEPS):
                    step()
                t0 = Clock.now()
                for _ in range(VALUE_STEPS):
                    step()
                values[name].append((Clock.now() - t0) / VALUE_STEPS)
            if gc_was:
                gc.enable()
            gc.collect()
            rounds += 1
            if rounds < first_look or (rounds not in looks and rounds < looks[-1]):
                continue
            needed = needed_pairs(names, values, valid)
            widths = [pair_result(values[a], values[b]).width for a, b in needed]
            widest = max(widths, default=0.0)
            resolved = widest <= margin
            if resolved or rounds >= looks[-1] or Clock.now() - start >= cap_s:
                break
    finally:
        if gc_was:
            gc.enable()
    return GroupResult(
        names,
        values,
        rounds,
        resolved,
        widest,
        design_label(seed, margin, cap_s),
        Clock.now() - start,
        needed,
    )
