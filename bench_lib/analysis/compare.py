"""Two runs side by side: cases aligned by identity, changes judged on the drift-free ratios.

:func:`compare` takes two tidy tables (see :func:`bench_lib.results.tidy`) and returns a
:class:`Comparison`: one row per case present in both runs, plus the cases present in only one.

*Identity.* Inside one run a case is identified by its axes (:data:`~bench_lib.results.
IDENTITY_AXES`, what ``case_id`` encodes). Across runs some axes are *expected* to differ:
the device when comparing CPU with CUDA, the thread count across machines. Those axes are left
out of the identity. By default (``ignore=None``) that is every axis that holds one value in
each run and a different value between them; pass ``ignore`` to choose them yourself (an empty
tuple matches on every axis, i.e. on ``case_id``).

*What is tested.* Absolute step times of two runs are not comparable sample by sample: the
rounds of one run drift together on a shared machine (two back-to-back runs of identical code
moved their baselines by 0.49x to 1.35x), so any test on them reads that drift as a change.
Inside a run, each case's time ratio to its own baseline is measured in interleaved pairs
(``ratio_samples``: one ratio per pair), so the drift cancels. A case's change is therefore the
change of that ratio: :func:`welch_log_ratio` runs Welch's t-test on the logarithms of the
per-round ratios of the two runs (the estimate is the ratio of their geometric means, with its
95% interval). The p-values of all tested cases are adjusted with :func:`holm` (Holm's
step-down method: the chance that *any* case is flagged when nothing changed is at most
``alpha``). A case is ``lower`` or ``higher`` when its Holm-adjusted p-value is below ``alpha``
(0.05 by default) **and** its ratio moved by at least ``min_change`` (5% by default).

Baselines are not tested (their ratio is to their own twin), nor cases with fewer than
:data:`MIN_PAIRS` pairs or a failed side. Absolute medians stay in the table as description,
read beside the baselines' drift (:meth:`Comparison.baseline_drift`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .results import IDENTITY_AXES, is_baseline_row, is_missing, safe_ratio

__all__ = [
    "ALPHA",
    "CHANGES",
    "CONFIDENCE",
    "MIN_CHANGE",
    "MIN_PAIRS",
    "Comparison",
    "IdentityError",
    "RatioTest",
    "Resolution",
    "auto_ignored_axes",
    "between_runs",
    "compare",
    "holm",
    "welch_log_ratio",
]

#: Default family-wise error rate: the chance that a comparison of identical code flags any case.
ALPHA = 0.05
#: Default smallest relative change of a case's time ratio that counts as lower or higher.
MIN_CHANGE = 0.05
#: Fewer per-round ratios than this on either side and the case is not tested.
MIN_PAIRS = 3
#: Level of the interval shown for each case's change.
CONFIDENCE = 0.95

#: The change labels, in the order the summary lists them, with their meaning.
CHANGES: dict[str, str] = {
    "lower": "the time ratio to the baseline fell (Holm-adjusted p < alpha, change >= min_change)",
    "higher": "the time ratio to the baseline rose (Holm-adjusted p < alpha, change >= min_change)",
    "unchanged": "no significant change of the time ratio, or one smaller than min_change",
    "not tested": f"a baseline, fewer than {MIN_PAIRS} pairs on a side, or a failed side",
}


class IdentityError(ValueError):
    """The chosen identity makes two cases of one run collide; the message names them."""


@dataclass(frozen=True)
class RatioTest:
    """Result of :func:`welch_log_ratio`.

    ``change``: geometric mean of the new per-round ratios over that of the base ones;
    ``ci_low``/``ci_high``: its :data:`CONFIDENCE` interval; ``p``: two-sided p-value (not
    adjusted); ``se``: standard error of the difference of mean logs; ``df``: Welch-Satterthwaite
    degrees of freedom (infinite when both samples are constant).
    """

    change: float
    ci_low: float
    ci_high: float
    p: float
    se: float
    df: float


def welch_log_ratio(base: Sequence[float], new: Sequence[float], between: float = 0.0) -> RatioTest:
    """Welch's two-sample t-test on ``log(new)`` against ``log(base)`` (per-round time ratios).

    The statistic is ``d / se`` with ``d = mean(log new) - mean(log base)`` and
    ``se = sqrt(s_b^2 / n_b + s_n^2 / n_n)`` (sample variances, ``n - 1``), referred to a t
    distribution with the Welch-Satterthwaite degrees of freedom (this is
    :func:`scipy.stats.ttest_ind` with ``equal_var=False``). Two constant samples give ``se = 0``:
    p is 1 when they are equal and 0 otherwise.

    ``between`` is the standard deviation of the run-to-run change of a case's log ratio that
    no round of one run can see (see :func:`between_runs`): its square joins the variance of
    the difference, so a case is flagged only beyond what two runs of the same code give.

    Raises ``ValueError`` when a side has fewer than 2 values or a value is not positive.
    """
    lb, ln = _logs(base, "base"), _logs(new, "new")
    nb, nn = len(lb), len(ln)
    d = float(ln.mean() - lb.mean())
    vb, vn = float(lb.var(ddof=1)) / nb, float(ln.var(ddof=1)) / nn
    se = math.sqrt(vb + vn + between**2)
    if se == 0.0:
        p = 1.0 if d == 0.0 else 0.0
        return RatioTest(math.exp(d), math.exp(d), math.exp(d), p, 0.0, math.inf)
    df = (vb + vn) ** 2 / (vb**2 / (nb - 1) + vn**2 / (nn - 1)) if vb + vn > 0 else math.inf
    p = float(2.0 * stats.t.sf(abs(d) / se, df))
    half = float(stats.t.isf((1.0 - CONFIDENCE) / 2.0, df)) * se
    return RatioTest(math.exp(d), math.exp(d - half), math.exp(d + half), p, se, df)


def _logs(values: Sequence[float], side: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        raise ValueError(f"the {side} side has {len(a)} ratios; Welch's test needs at least 2")
    if not (a > 0).all():
        raise ValueError(f"the {side} side holds a ratio <= 0 ({a.min()!r}); ratios are > 0")
    logs: np.ndarray = np.log(a)
    return logs


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN stays NaN and is not counted.

    With the ``m`` finite p-values sorted ``p_(1) <= ... <= p_(m)``, the adjusted value of the
    ``k``-th is ``max over j <= k of min(1, (m - j + 1) p_(j))``. Rejecting every case whose
    adjusted value is below ``alpha`` keeps the family-wise error rate at ``alpha``.
    """
    p = [float(v) for v in p_values]
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(finite)
    out = [math.nan] * len(p)
    running = 0.0
    for k, (v, i) in enumerate(finite):
        running = max(running, min(1.0, (m - k) * v))
        out[i] = running
    return out


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
class Resolution:
    """What a comparison could resolve, computed from its own data.

    ``tested``: cases tested. ``detectable``: per tested case, the smallest relative change of
    its time ratio that would be flagged even at Holm's strictest step (``alpha / tested``):
    ``exp(t_{df}^{-1}(1 - alpha / (2 tested)) * se) - 1``, at least ``min_change``.
    ``median_detectable``: their median (NaN without a tested case). ``drift``: the largest
    ``|new/base - 1|`` of the baselines' absolute medians (NaN without a baseline in both
    runs): absolute changes below it cannot be told from the machine's drift.
    """

    tested: int
    detectable: tuple[float, ...]
    median_detectable: float
    drift: float

    def share_resolving(self, change: float) -> int:
        """How many tested cases would flag a change of ``change`` (a fraction, e.g. 0.1)."""
        return sum(1 for d in self.detectable if d <= change)


@dataclass(frozen=True)
class Comparison:
    """The aligned cases and what could not be aligned.

    ``table`` has one row per case in both runs, in the base run's order: ``case_id`` (base
    run's), ``new_case_id``, axes, the absolute (descriptive) ``base_median_s``,
    ``new_median_s`` and ``median_ratio`` (new/base); the drift-free ``base_time_ratio``,
    ``new_time_ratio`` (with ``_ci_low``/``_ci_high``), ``ratio_change`` (new/base ratio of the
    geometric means of the per-round ratios, with ``ratio_change_ci_low``/``_high``),
    ``p_value`` (Welch, unadjusted), ``p_holm``, ``detectable`` (see :class:`Resolution`),
    ``change`` (a :data:`CHANGES` key); ``base_verdict``, ``new_verdict``, ``base_validity``,
    ``new_validity``, ``verdict_change`` (``newly invalid``, ``newly valid``, ``newly failed``,
    ``recovered``, ``verdict changed`` or ``""``), ``base_peak_memory_bytes``,
    ``new_peak_memory_bytes``, ``memory_ratio``, ``base_status``, ``new_status``.
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

    def resolution(self) -> Resolution:
        """What this comparison could resolve (see :class:`Resolution`)."""
        detectable: tuple[float, ...] = ()
        if len(self.table):
            tested = self.table[self.table["change"] != "not tested"]
            detectable = tuple(float(v) for v in tested["detectable"])
        drift = self.baseline_drift()
        return Resolution(
            len(detectable),
            detectable,
            float(np.median(detectable)) if detectable else math.nan,
            max(abs(d - 1.0) for d in drift) if drift else math.nan,
        )

    def counts(self) -> dict[str, int]:
        """How many aligned cases fall under each :data:`CHANGES` label and verdict change."""
        column = self.table["change"] if len(self.table) else pd.Series([], dtype=object)
        out = {k: int((column == k).sum()) for k in CHANGES}
        for k in ("newly invalid", "newly valid", "newly failed", "recovered", "verdict changed"):
            out[k] = int((self.table["verdict_change"] == k).sum()) if len(self.table) else 0
        return out


def _pairs(row: pd.Series) -> list[float]:
    data = row["ratio_samples"]
    if is_missing(data) or row["status"] != "ok" or is_baseline_row(row.to_dict()):
        return []
    return [float(v) for v in data]


def between_runs(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
    """The run-to-run spread of a case's log ratio beyond what its rounds show: the robust
    standard deviation (1.4826 x MAD) of the tested cases' log changes, less (in variance) the
    median variance the rounds themselves give; 0 below 10 cases. Two runs of the same code
    move some cases' ratios by a few percent (a process's memory layout, its caches) although
    each run's rounds are tight; a change must stand out from that. The MAD ignores the
    minority of cases that really changed."""
    if len(pairs) < 10:
        return 0.0
    logs = [float(np.log(xn).mean() - np.log(xb).mean()) for xb, xn in pairs]
    within = [
        float(np.log(xb).var(ddof=1)) / len(xb) + float(np.log(xn).var(ddof=1)) / len(xn)
        for xb, xn in pairs
    ]
    centre = float(np.median(logs))
    spread = 1.4826 * float(np.median([abs(x - centre) for x in logs]))
    return math.sqrt(max(0.0, spread**2 - float(np.median(within))))


def _tests(
    rows: list[tuple[pd.Series, pd.Series]], alpha: float, min_change: float
) -> list[dict[str, Any]]:
    """Per aligned pair of rows: the ratio test's columns, Holm-adjusted across the tested."""
    samples = [(_pairs(b), _pairs(n)) for b, n in rows]
    testable = [(xb, xn) for xb, xn in samples if len(xb) >= MIN_PAIRS and len(xn) >= MIN_PAIRS]
    between = between_runs(testable)
    results: list[RatioTest | None] = []
    for xb, xn in samples:
        ok = len(xb) >= MIN_PAIRS and len(xn) >= MIN_PAIRS
        results.append(welch_log_ratio(xb, xn, between) if ok else None)
    adjusted = holm([math.nan if r is None else r.p for r in results])
    m = sum(r is not None for r in results)
    out: list[dict[str, Any]] = []
    for r, p_holm in zip(results, adjusted, strict=True):
        if r is None:
            out.append(
                {
                    "ratio_change": math.nan,
                    "ratio_change_ci_low": math.nan,
                    "ratio_change_ci_high": math.nan,
                    "p_value": math.nan,
                    "p_holm": math.nan,
                    "detectable": math.nan,
                    "change": "not tested",
                }
            )
            continue
        if math.isinf(r.df):
            detectable = min_change
        else:
            t = float(stats.t.isf(alpha / (2.0 * m), r.df))
            detectable = max(min_change, math.expm1(t * r.se))
        moved = abs(r.change - 1.0) >= min_change and r.change != 1.0
        change = ("lower" if r.change < 1.0 else "higher") if p_holm < alpha and moved else None
        out.append(
            {
                "ratio_change": r.change,
                "ratio_change_ci_low": r.ci_low,
                "ratio_change_ci_high": r.ci_high,
                "p_value": r.p,
                "p_holm": p_holm,
                "detectable": detectable,
                "change": change or "unchanged",
            }
        )
    return out


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


_CARRIED_AXES = (
    "scenario",
    "model",
    "depth",
    "pattern",
    "frozen_blocks",
    "frozen_mode",
    "mechanism",
    "adapter",
    "parallel",
)


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    ignore: Sequence[str] | None = None,
    alpha: float = ALPHA,
    min_change: float = MIN_CHANGE,
) -> Comparison:
    """Align ``new`` with ``base`` and compare every case present in both.

    ``ignore``: identity axes to leave out (``None``: :func:`auto_ignored_axes`). ``alpha``:
    family-wise error rate of Holm's method, in (0, 1); ``min_change``: smallest relative change
    of a time ratio that is flagged, in [0, 1). Raises ``ValueError`` for an unknown axis or an
    out-of-range ``alpha``/``min_change``, and :class:`IdentityError` when the identity makes
    two cases of one run collide.
    """
    unknown = [a for a in ignore or () if a not in IDENTITY_AXES]
    if unknown:
        raise ValueError(f"unknown axis {unknown[0]!r}; axes: {', '.join(IDENTITY_AXES)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0.0 <= min_change < 1.0:
        raise ValueError(f"min_change must be in [0, 1), got {min_change!r}")
    auto = ignore is None
    ignored = auto_ignored_axes(base, new) if ignore is None else tuple(dict.fromkeys(ignore))
    axes = [a for a in IDENTITY_AXES if a not in ignored]
    base = base.reset_index(drop=True)
    new = new.reset_index(drop=True)
    ib = _index(base, axes, "base")
    inew = _index(new, axes, "new")
    aligned = [(base.iloc[i], new.iloc[inew[key]]) for key, i in ib.items() if key in inew]
    rows: list[dict[str, Any]] = []
    for (b, n), tested in zip(aligned, _tests(aligned, alpha, min_change), strict=True):
        row: dict[str, Any] = {"case_id": b["case_id"], "new_case_id": n["case_id"]}
        row.update({a: b[a] for a in _CARRIED_AXES})
        row.update(
            base_median_s=b["median_s"],
            new_median_s=n["median_s"],
            median_ratio=safe_ratio(n["median_s"], b["median_s"]),
            base_time_ratio=b["time_ratio"],
            base_time_ratio_ci_low=b["time_ratio_ci_low"],
            base_time_ratio_ci_high=b["time_ratio_ci_high"],
            new_time_ratio=n["time_ratio"],
            new_time_ratio_ci_low=n["time_ratio_ci_low"],
            new_time_ratio_ci_high=n["time_ratio_ci_high"],
            **tested,
            base_verdict=b["verdict"],
            new_verdict=n["verdict"],
            base_validity=b["validity"],
            new_validity=n["validity"],
            verdict_change=_verdict_change(
                str(b["validity"]), str(n["validity"]), b["verdict"], n["verdict"]
            ),
            base_peak_memory_bytes=b["peak_memory_bytes"],
            new_peak_memory_bytes=n["peak_memory_bytes"],
            memory_ratio=safe_ratio(n["peak_memory_bytes"], b["peak_memory_bytes"]),
            base_status=b["status"],
            new_status=n["status"],
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if not rows:
        table = pd.DataFrame(
            columns=["case_id", "change", "verdict_change", "mechanism", "detectable"]
        )
    only_base = base.loc[[i for k, i in ib.items() if k not in inew]]
    only_new = new.loc[[i for k, i in inew.items() if k not in ib]]
    values = {a: (_one(base, a), _one(new, a)) for a in ignored}
    return Comparison(table, only_base, only_new, ignored, values, auto, alpha, min_change)


def _one(frame: pd.DataFrame, axis: str) -> Any:
    """The value of ``axis`` in ``frame`` if it has one, else a sorted tuple of its values."""
    values = sorted(_axis_values(frame, axis), key=str)
    return values[0] if len(values) == 1 else tuple(values)
