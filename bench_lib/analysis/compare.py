"""Two runs side by side: cases aligned by identity, ratio of medians, significance, verdicts.

:func:`compare` takes two tidy tables (see :func:`bench_lib.results.tidy`) and returns a
:class:`Comparison`: one row per case present in both runs, plus the cases present in only one.

*Identity.* Inside one run a case is identified by its axes (:data:`~bench_lib.results.
IDENTITY_AXES`, what ``case_id`` encodes). Across runs some axes are *expected* to differ:
the device when comparing CPU with CUDA, the thread count across machines. Those axes are left
out of the identity. By default (``ignore=None``) that is every axis that holds one value in
each run and a different value between them; pass ``ignore`` to choose them yourself (an empty
tuple matches on every axis, i.e. on ``case_id``).

*Significance.* The timed rounds of the two runs (pytest-benchmark's ``stats.data``) are
compared with a two-sided Mann-Whitney U test (scipy's, normal approximation with tie and
continuity correction, :func:`mann_whitney_u`) at level ``alpha`` (0.01 by default). A case is
*faster* or *slower* only when the test rejects equal distributions **and** the ratio of
medians new/base differs from 1 by at least ``min_change`` (5% by default); the direction is
that of the ratio. The second condition matters: timed rounds drift together on a shared
machine, so they are not independent samples, and two runs of the same code then differ
"significantly" in most cases by a few percent. The threshold keeps such drift out of the
verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .results import IDENTITY_AXES, is_baseline_row, is_missing

__all__ = [
    "ALPHA",
    "CHANGES",
    "MIN_CHANGE",
    "MIN_SAMPLES",
    "RATIO_CHANGES",
    "Comparison",
    "IdentityError",
    "MannWhitney",
    "auto_ignored_axes",
    "compare",
    "mann_whitney_u",
]

#: Default significance level of the two-sided test.
ALPHA = 0.01
#: Default smallest relative change of the median that counts as faster or slower.
MIN_CHANGE = 0.05
#: Fewer timed rounds than this on either side and the test is not run (the normal
#: approximation is meaningless and no p-value below 0.01 is reachable with fewer).
MIN_SAMPLES = 5

#: The time-change labels, in the order the summary lists them, with their meaning.
CHANGES: dict[str, str] = {
    "faster": "new is faster (significant, ratio of medians <= 1 - min_change)",
    "slower": "new is slower (significant, ratio of medians >= 1 + min_change)",
    "unchanged": "no significant difference, or one smaller than min_change",
    "not tested": "too few timed rounds, or a side failed",
}


class IdentityError(ValueError):
    """The chosen identity makes two cases of one run collide; the message names them."""


@dataclass(frozen=True)
class MannWhitney:
    """Result of :func:`mann_whitney_u`: ``u`` is the statistic of the first sample."""

    u: float
    z: float
    p: float


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """Two-sided Mann-Whitney U test of ``x`` against ``y``: :func:`scipy.stats.mannwhitneyu`
    with the normal approximation, tie correction and continuity correction.

    ``u`` is ``U1 = R1 - n1 (n1 + 1) / 2`` (``R1`` the sum of ``x``'s ranks in the pooled sample,
    ties given their average rank). ``z`` is the standard normal deviate of the two-sided
    p-value, ``Phi^-1(1 - p / 2)``: ``(max(U1, U2) - n1 n2 / 2 - 1/2) / sd`` with the tie-corrected
    sd; 0 where ``p`` is 1 (e.g. every value equal), infinite where ``p`` underflows to 0.

    Raises ``ValueError`` if either sample is empty.
    """
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(
            f"Mann-Whitney needs two non-empty samples, got sizes {len(a)} and {len(b)}"
        )
    # method="asymptotic": scipy's default ("auto") switches to the exact distribution for small
    # samples without ties, so p-values would change with the number of rounds and stop being
    # those of the documented normal approximation.
    result = stats.mannwhitneyu(
        a, b, use_continuity=True, alternative="two-sided", method="asymptotic"
    )
    p = float(result.pvalue)
    return MannWhitney(float(result.statistic), float(stats.norm.isf(p / 2.0)), p)


def _axis_values(frame: pd.DataFrame, axis: str) -> set[Any]:
    return {None if is_missing(v) else _hashable(v) for v in frame[axis]}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, np.ndarray)) else value


def auto_ignored_axes(base: pd.DataFrame, new: pd.DataFrame) -> tuple[str, ...]:
    """Axes that hold one value in each run and differ between them (e.g. ``device``)."""
    out = []
    for axis in IDENTITY_AXES:
        b, n = _axis_values(base, axis), _axis_values(new, axis)
        if len(b) == 1 and len(n) == 1 and b != n:
            out.append(axis)
    return tuple(out)


def _identity(row: pd.Series, axes: Sequence[str]) -> tuple[Any, ...]:
    return tuple(None if is_missing(row[a]) else _hashable(row[a]) for a in axes)


def _index(frame: pd.DataFrame, axes: Sequence[str], side: str) -> dict[tuple[Any, ...], int]:
    index: dict[tuple[Any, ...], int] = {}
    for i, row in frame.iterrows():
        key = _identity(row, axes)
        if key in index:
            other = str(frame.at[index[key], "case_id"])
            raise IdentityError(
                f"in the {side} run, {other} and {row['case_id']} have the same identity once "
                f"the ignored axes are left out; ignore fewer axes"
            )
        index[key] = int(i)  # type: ignore[call-overload]
    return index


@dataclass(frozen=True)
class Comparison:
    """The aligned cases and what could not be aligned.

    ``table`` has one row per case in both runs, in the base run's order: ``case_id`` (base
    run's), ``new_case_id``, axes, ``base_median_s``, ``new_median_s``, ``median_ratio``
    (new/base), ``p_value``, ``change`` (a :data:`CHANGES` key), ``base_verdict``,
    ``new_verdict``, ``base_validity``, ``new_validity``, ``verdict_change`` (``newly invalid``,
    ``newly valid``, ``newly failed``, ``recovered``, ``verdict changed`` or ``""``),
    ``base_time_ratio``, ``new_time_ratio``, ``base_peak_memory_bytes``,
    ``new_peak_memory_bytes``, ``memory_ratio``.
    """

    table: pd.DataFrame
    only_base: pd.DataFrame
    only_new: pd.DataFrame
    ignored_axes: tuple[str, ...]
    ignored_values: dict[str, tuple[Any, Any]]
    auto_ignored: bool
    alpha: float
    min_change: float = MIN_CHANGE

    def baseline_drift(self) -> list[float]:
        """New/base ratios of median step time of the baselines (nothing frozen): how far the
        same workload moved between the runs, i.e. the machine's drift when the code is the
        same."""
        if not len(self.table):
            return []
        rows = self.table[[is_baseline_row(r) for r in self.table.to_dict("records")]]
        return [float(v) for v in rows["median_ratio"] if not is_missing(v)]

    def counts(self) -> dict[str, int]:
        """How many aligned cases fall under each :data:`CHANGES` label and verdict change."""
        out = {k: int((self.table["change"] == k).sum()) for k in CHANGES}
        for k in RATIO_CHANGES:
            out[f"time ratio {k}"] = (
                int((self.table["ratio_change"] == k).sum()) if len(self.table) else 0
            )
        for k in ("newly invalid", "newly valid", "newly failed", "recovered", "verdict changed"):
            out[k] = int((self.table["verdict_change"] == k).sum())
        return out


def _samples(row: pd.Series) -> list[float]:
    data = row["samples"]
    if is_missing(data):
        return []
    return [float(v) for v in data]


def _change(
    row_b: pd.Series, row_n: pd.Series, alpha: float, min_change: float
) -> tuple[float, float, str]:
    """(ratio of medians new/base, p-value, change label)."""
    mb, mn = row_b["median_s"], row_n["median_s"]
    ratio = math.nan if is_missing(mb) or is_missing(mn) or not mb else float(mn) / float(mb)
    xb, xn = _samples(row_b), _samples(row_n)
    if len(xb) < MIN_SAMPLES or len(xn) < MIN_SAMPLES or math.isnan(ratio):
        return ratio, math.nan, "not tested"
    p = mann_whitney_u(xn, xb).p
    if p >= alpha or abs(ratio - 1.0) < min_change or ratio == 1.0:
        return ratio, p, "unchanged"
    return ratio, p, "faster" if ratio < 1.0 else "slower"


#: Labels of the drift-free comparison: each run's time ratio to its own baseline, with its
#: 95% interval (measured in interleaved pairs inside the run, so machine drift cancels).
RATIO_CHANGES: dict[str, str] = {
    "lower": "the new time ratio's interval lies wholly below the base one's",
    "higher": "the new time ratio's interval lies wholly above the base one's",
    "same": "the two intervals overlap",
    "no interval": "a side has no interval (a baseline, too few pairs, or a failed case)",
}


def _ratio_change(row_b: pd.Series, row_n: pd.Series) -> str:
    lo_b, hi_b = row_b["time_ratio_ci_low"], row_b["time_ratio_ci_high"]
    lo_n, hi_n = row_n["time_ratio_ci_low"], row_n["time_ratio_ci_high"]
    if is_baseline_row(row_b.to_dict()) or any(is_missing(v) for v in (lo_b, hi_b, lo_n, hi_n)):
        return "no interval"
    if float(hi_n) < float(lo_b):
        return "lower"
    if float(lo_n) > float(hi_b):
        return "higher"
    return "same"


def _verdict_change(vb: str, vn: str, db: Any, dn: Any) -> str:
    if vb == vn:
        return "" if is_missing(db) or is_missing(dn) or db == dn else "verdict changed"
    if vn == "failed":
        return "newly failed"
    if vb == "failed":
        return "recovered"
    if vb == "valid" and vn == "invalid":
        return "newly invalid"
    if vb == "invalid" and vn == "valid":
        return "newly valid"
    return ""  # one side unknown: nothing can be said


def _ratio(num: Any, den: Any) -> float:
    if is_missing(num) or is_missing(den) or not den:
        return math.nan
    return float(num) / float(den)


_CARRIED_AXES = ("scenario", "model", "depth", "pattern", "frozen_blocks", "mechanism", "adapter")


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    ignore: Sequence[str] | None = None,
    alpha: float = ALPHA,
    min_change: float = MIN_CHANGE,
) -> Comparison:
    """Align ``new`` with ``base`` and compare every case present in both.

    ``ignore``: identity axes to leave out (``None``: :func:`auto_ignored_axes`). Raises
    ``ValueError`` for an unknown axis and :class:`IdentityError` when the identity makes two
    cases of one run collide.
    """
    unknown = [a for a in ignore or () if a not in IDENTITY_AXES]
    if unknown:
        raise ValueError(f"unknown axis {unknown[0]!r}; axes: {', '.join(IDENTITY_AXES)}")
    auto = ignore is None
    ignored = auto_ignored_axes(base, new) if ignore is None else tuple(dict.fromkeys(ignore))
    axes = [a for a in IDENTITY_AXES if a not in ignored]
    base = base.reset_index(drop=True)
    new = new.reset_index(drop=True)
    ib = _index(base, axes, "base")
    inew = _index(new, axes, "new")
    rows: list[dict[str, Any]] = []
    for key, i in ib.items():
        if key not in inew:
            continue
        b: pd.Series[Any] = base.iloc[i]
        n: pd.Series[Any] = new.iloc[inew[key]]
        ratio, p, change = _change(b, n, alpha, min_change)
        row: dict[str, Any] = {"case_id": b["case_id"], "new_case_id": n["case_id"]}
        row.update({a: b[a] for a in _CARRIED_AXES})
        row.update(
            base_median_s=b["median_s"],
            new_median_s=n["median_s"],
            median_ratio=ratio,
            p_value=p,
            change=change,
            base_verdict=b["verdict"],
            new_verdict=n["verdict"],
            base_validity=b["validity"],
            new_validity=n["validity"],
            verdict_change=_verdict_change(
                str(b["validity"]), str(n["validity"]), b["verdict"], n["verdict"]
            ),
            base_time_ratio=b["time_ratio"],
            new_time_ratio=n["time_ratio"],
            ratio_change=_ratio_change(b, n),
            base_peak_memory_bytes=b["peak_memory_bytes"],
            new_peak_memory_bytes=n["peak_memory_bytes"],
            memory_ratio=_ratio(n["peak_memory_bytes"], b["peak_memory_bytes"]),
            base_status=b["status"],
            new_status=n["status"],
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if not rows:
        table = pd.DataFrame(columns=["case_id", "change", "verdict_change", "mechanism"])
    only_base = base.loc[[i for k, i in ib.items() if k not in inew]]
    only_new = new.loc[[i for k, i in inew.items() if k not in ib]]
    values = {a: (_one(base, a), _one(new, a)) for a in ignored}
    return Comparison(table, only_base, only_new, ignored, values, auto, alpha, min_change)


def _one(frame: pd.DataFrame, axis: str) -> Any:
    """The value of ``axis`` in ``frame`` if it has one, else a sorted tuple of its values."""
    values = sorted(_axis_values(frame, axis), key=str)
    return values[0] if len(values) == 1 else tuple(values)
