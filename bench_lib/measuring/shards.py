"""Shards of a sweep of about equal time, for several GPUs or machines (``--bench-shard``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .spec import Case, CaseError

__all__ = ["ShardPlan", "plan_shards", "shard"]


@dataclass(frozen=True)
class ShardPlan:
    """Cases dealt to ``count`` shards by estimated seconds: ``assignment[case]`` is its shard,
    ``loads[i]`` shard i's estimated seconds, ``split`` the baselines whose groups were split."""

    assignment: dict[Case, int]
    loads: tuple[float, ...]
    split: tuple[Case, ...]

    @property
    def imbalance(self) -> float:
        """Longest shard over the mean shard, minus 1 (0.0 is a perfect split)."""
        mean = sum(self.loads) / len(self.loads)
        return max(self.loads) / mean - 1 if mean > 0 else 0.0


def plan_shards(
    items: Sequence[Case], count: int, seconds: Mapping[Case, float] | None = None
) -> ShardPlan:
    """Deal ``items`` to ``count`` shards so that their estimated seconds are about equal.

    A baseline group (the baseline and its cases) stays whole, so that each shard's report has
    its baselines, unless the group alone is longer than a shard's share: then its cases are
    dealt one by one (each case still times its pairs against its own baseline twin; the merged
    report of all shards finds the baseline's row in whichever file holds it). Units go longest
    first to the least loaded shard. Without ``seconds`` every case counts 1. Deterministic:
    every shard computes the same plan from the same cases.
    """
    if count < 1:
        raise CaseError(f"shard count {count} must be >= 1")
    cost = {c: (seconds[c] if seconds is not None else 1.0) for c in items}
    groups: dict[Case, list[Case]] = {}
    for c in items:
        groups.setdefault(c.baseline(), []).append(c)
    share = sum(cost.values()) / count
    units: list[list[Case]] = []
    split: list[Case] = []
    for base, members in groups.items():
        if count > 1 and len(members) > 1 and sum(cost[c] for c in members) > share:
            units += [[c] for c in members]
            split.append(base)
        else:
            units.append(members)
    loads = [0.0] * count
    assignment: dict[Case, int] = {}
    for k in sorted(range(len(units)), key=lambda k: -sum(cost[c] for c in units[k])):
        target = min(range(count), key=lambda i: (loads[i], i))
        for c in units[k]:
            assignment[c] = target
            loads[target] += cost[c]
    return ShardPlan(assignment, tuple(loads), tuple(split))


def shard(
    items: Sequence[Case], index: int, count: int, seconds: Mapping[Case, float] | None = None
) -> list[Case]:
    """The cases of shard ``index`` of ``count`` (0-based), in sweep order, dealt by estimated
    seconds (see :func:`plan_shards`)."""
    if count < 1 or not 0 <= index < count:
        raise CaseError(f"shard {index}/{count}: need 0 <= index < count")
    plan = plan_shards(items, count, seconds)
    return [c for c in items if plan.assignment[c] == index]
