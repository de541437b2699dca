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
    items: Sequence[Case],
    count: int,
    seconds: Mapping[Case, float] | None = None,
    once: Mapping[Case, Mapping[str, float]] | None = None,
) -> ShardPlan:
    """Deal ``items`` to ``count`` shards so that their estimated seconds are about equal.

    A baseline group (the baseline and its cases) stays whole, so that each shard's report has
    its baselines, unless the group alone is longer than a shard's share: then its cases are
    dealt one by one (each shard times the decision groups among its own cases; the merged
    report of all shards finds the baseline's row in whichever file holds it). Units go longest
    first to the shard where they end earliest. Without ``seconds`` every case counts 1.

    ``once`` gives a case's one-time costs by kind (a shard's process pays each kind once,
    with its first case of that kind: the first compile starts inductor's worker pool, the
    first parallel case the fork server): they count in a shard's load when its first unit of
    that kind lands there. Deterministic: every shard computes the same plan from the same
    cases.
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
    kinds = [_kinds(u, once or {}) for u in units]
    loads = [0.0] * count
    paid: list[set[str]] = [set() for _ in range(count)]
    assignment: dict[Case, int] = {}

    def extra(i: int, k: int) -> float:
        return sum(v for kind, v in kinds[k].items() if kind not in paid[i])

    weight = [sum(cost[c] for c in u) + sum(kinds[k].values()) for k, u in enumerate(units)]
    for k in sorted(range(len(units)), key=lambda k: -weight[k]):
        target = min(range(count), key=lambda i: (loads[i] + extra(i, k), i))
        loads[target] += extra(target, k)
        paid[target] |= set(kinds[k])
        for c in units[k]:
            assignment[c] = target
            loads[target] += cost[c]
    return ShardPlan(assignment, tuple(loads), tuple(split))


def _kinds(unit: Sequence[Case], once: Mapping[Case, Mapping[str, float]]) -> dict[str, float]:
    """The one-time costs a unit's cases need, each kind once."""
    out: dict[str, float] = {}
    for c in unit:
        for kind, v in once.get(c, {}).items():
            out[kind] = max(out.get(kind, 0.0), v)
    return out


def shard(
    items: Sequence[Case],
    index: int,
    count: int,
    seconds: Mapping[Case, float] | None = None,
    once: Mapping[Case, Mapping[str, float]] | None = None,
) -> list[Case]:
    """The cases of shard ``index`` of ``count`` (0-based), in sweep order, dealt by estimated
    seconds (see :func:`plan_shards`)."""
    if count < 1 or not 0 <= index < count:
        raise CaseError(f"shard {index}/{count}: need 0 <= index < count")
    plan = plan_shards(items, count, seconds, once)
    return [c for c in items if plan.assignment[c] == index]
