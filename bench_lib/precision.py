"""What a run's decision groups reached: the share resolved, the widths, the noise per value, the
rounds resolution would need, and the margin this machine can reach in the rounds it ran.

Plain Python on record dicts (the measuring side's records, or the analysis side's rows), so that
the run's terminal summary, its JSON and the report say the same thing.

For a group that ran ``n`` rounds and whose widest needed pair reached a full relative width
``w`` ((high - low) / ratio), the interval's width shrinks as ``1 / sqrt(n)``:

* **noise per value**, the spread of one round's log ratio that gives that width:
  ``w * sqrt(n) / (2 * 1.96)`` (a normal interval; the Hodges-Lehmann interval the groups use
  is about as wide);
* **rounds to resolve** at margin ``m``: ``ceil(n * (w / m) ** 2)`` (``n`` for a resolved group);
* **reachable margin**: the width that 90% of the groups reached in the rounds they ran. At that
  margin 90% of them would have resolved; it is the margin to propose for this machine and
  set-up when the budget holds and the margin cannot.

Groups are split by set-up (single process, or each data-parallel set-up): their noise differs
by a factor of 3 to 5 on a shared 2-core machine, so one figure would describe neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .axes import identity_record_fields

__all__ = ["SHARE", "Precision", "by_setup", "group_rows", "summary_lines"]

#: The share of groups a margin must resolve to be "reachable".
SHARE = 0.9
_Z = 1.96


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _number(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class Precision:
    """The decision groups of one set-up (``setup``: ``single process`` or a parallel set-up)."""

    setup: str
    groups: int
    resolved: int
    margin: float
    #: Median of the widest needed pair's width over the groups.
    median_width: float
    #: Median noise per value (spread of one round's log ratio), over the groups.
    noise: float
    #: Median rounds the groups ran, and the median rounds they would need at ``margin``.
    rounds: float
    rounds_needed: float
    #: The width 90% of the groups reached (:data:`SHARE`): the margin they could resolve at.
    reachable: float
    #: Resolved groups whose cap was spent with a needed pair still across an edge of the
    #: margin (``group_stop`` ``borderline``): calls another run may make the other way.
    borderline: int = 0

    @property
    def share(self) -> float:
        return self.resolved / self.groups if self.groups else math.nan

    def line(self) -> str:
        """One sentence: ``"single process: 84 of 91 groups resolved (92%) at margin 5%; ..."``."""
        text = (
            f"{self.setup}: {self.resolved} of {self.groups} decision groups resolved "
            f"({self.share:.0%}) at margin {self.margin:.0%}; median width {self.median_width:.1%} "
            f"after a median {self.rounds:.0f} rounds; noise per value {self.noise:.1%}"
        )
        if self.borderline:
            text += (
                f"; {self.borderline} resolved with a pair still across an edge of the margin "
                "when the cap was spent"
            )
        if self.resolved < self.groups:
            text += (
                f"; resolving would take a median {self.rounds_needed:.0f} rounds; the margin "
                f"{SHARE:.0%} of them reached is {self.reachable:.1%}"
            )
        return text


def _setup(row: Mapping[str, Any]) -> str:
    parallel = row.get("parallel")
    return "single process" if parallel in (None, "none") else str(parallel)


def group_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per timed decision group with needed pairs: the first member's (every member
    carries the group's ``resolved``, ``group_rounds``, ``group_widest`` and ``margin``). A
    group is every identity field but the mechanism, as the suite forms it."""
    fields = [f for f in identity_record_fields() if f != "mechanism"]
    seen: dict[tuple[str, ...], Mapping[str, Any]] = {}
    for r in rows:
        if r.get("status") != "ok" or _number(r.get("group_widest")) is None:
            continue
        if _number(r.get("group_rounds")) is None or _number(r.get("margin")) is None:
            continue
        seen.setdefault(tuple(str(r.get(f)) for f in fields), r)
    return list(seen.values())


def by_setup(rows: Iterable[Mapping[str, Any]]) -> list[Precision]:
    """The precision of each set-up's decision groups (single process first)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in group_rows(rows):
        groups.setdefault(_setup(r), []).append(r)
    out = []
    for setup in sorted(groups, key=lambda s: (s != "single process", s)):
        rs = groups[setup]
        widths = [float(r["group_widest"]) for r in rs]
        rounds = [float(r["group_rounds"]) for r in rs]
        margin = float(rs[0]["margin"])
        noise = [w * math.sqrt(n) / (2 * _Z) for w, n in zip(widths, rounds, strict=True)]
        needed = [
            n if bool(r.get("resolved")) else math.ceil(n * (w / margin) ** 2)
            for r, w, n in zip(rs, widths, rounds, strict=True)
        ]
        out.append(
            Precision(
                setup=setup,
                groups=len(rs),
                resolved=sum(1 for r in rs if bool(r.get("resolved"))),
                margin=margin,
                median_width=_quantile(widths, 0.5),
                noise=_quantile(noise, 0.5),
                rounds=_quantile(rounds, 0.5),
                rounds_needed=_quantile([float(x) for x in needed], 0.5),
                reachable=_quantile(widths, SHARE),
                borderline=sum(1 for r in rs if "borderline" in str(r.get("group_stop") or "")),
            )
        )
    return out


def summary_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The run's precision in a few lines: all groups, then each set-up."""
    parts = by_setup(rows)
    if not parts:
        return []
    total = sum(p.groups for p in parts)
    resolved = sum(p.resolved for p in parts)
    head = f"decision groups: {resolved} of {total} resolved ({resolved / total:.0%})"
    return [head, *(f"  {p.line()}" for p in parts)]
