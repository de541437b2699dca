"""The clock seam, the median and its interval (numpy, scipy), and the interleaved ratio.

The timed loop itself belongs to pytest-benchmark. This module measures a case's time *relative
to its baseline* in a separate pass: baseline and case steps run in interleaved pairs, so that
the drift of a shared, noisy machine hits both sides of each pair alike and cancels in the ratio.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Clock",
    "RatioResult",
    "interleaved_ratio",
    "median",
    "median_ci",
    "quantile",
    "timed_value",
]


class Clock:
    """The clock seam: tests replace ``Clock.now`` with a fake that returns seeded times."""

    now: Callable[[], float] = staticmethod(time.perf_counter)


def timed_value(step: Callable[[], object], warm: int, steps: int) -> float:
    """One timed value of ``step``: ``warm`` untimed steps, then the seconds per step of
    ``steps`` more, on :class:`Clock`."""
    for _ in range(warm):
        step()
    t0 = Clock.now()
    for _ in range(steps):
        step()
    return (Clock.now() - t0) / steps


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``0 <= q <= 1``."""
    if not values:
        raise ValueError("quantile of an empty sequence")
    return float(np.quantile(np.asarray(values, dtype=float), q))


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median, from order statistics.

    scipy's ``quantile_test(...).confidence_interval()`` (the exact binomial order-statistic
    interval): ``(x_(j), x_(n+1-j))`` for the largest ``j`` with coverage
    ``1 - 2 * P(Binomial(n, 1/2) <= j-1) >= confidence``. Returns ``None`` when ``n`` is too
    small to reach the confidence at all (n < 6 for 95%), where scipy gives an infinite or NaN
    end. The interval's ranks depend on ``n`` alone, so scipy is asked once per ``n`` (with the
    ranks themselves as the sample) and the sorted values are read at those ranks.
    """
    if not values:
        return None
    ranks = _median_ci_ranks(len(values), confidence)
    if ranks is None:
        return None
    xs = np.sort(np.asarray(values, dtype=float))
    return float(xs[ranks[0]]), float(xs[ranks[1]])


@functools.cache
def _median_ci_ranks(n: int, confidence: float) -> tuple[int, int] | None:
    import scipy.stats  # here: a worker process of a parallel case never needs it (1 s)

    ranks = np.arange(n, dtype=float)
    result = scipy.stats.quantile_test(ranks, q=float(np.median(ranks)), p=0.5)
    ci = result.confidence_interval(confidence_level=confidence)
    low, high = float(ci.low), float(ci.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return int(low), int(high)


@dataclass(frozen=True)
class RatioResult:
    """Case time over baseline time, per interleaved pair, with the median and its interval."""

    ratios: tuple[float, ...]
    median: float
    ci_low: float | None
    ci_high: float | None

    @property
    def pairs(self) -> int:
        return len(self.ratios)


def interleaved_ratio(
    case_step: Callable[[], object], baseline_step: Callable[[], object], pairs: int
) -> RatioResult:
    """Time ``pairs`` pairs of (baseline, case) steps, alternating which runs first (ABBA order
    cancels a steady drift and any first-in-pair effect), and return the ratios case/baseline.

    Both callables must synchronize their device before returning.
    """
    if pairs < 1:
        raise ValueError(f"pairs={pairs} must be >= 1")
    ratios: list[float] = []
    for i in range(pairs):
        order = ("baseline", "case") if i % 2 == 0 else ("case", "baseline")
        times: dict[str, float] = {}
        for role in order:
            fn = case_step if role == "case" else baseline_step
            t0 = Clock.now()
            fn()
            times[role] = Clock.now() - t0
        ratios.append(times["case"] / times["baseline"])
    ci = median_ci(ratios)
    return RatioResult(tuple(ratios), median(ratios), ci[0] if ci else None, ci[1] if ci else None)


def hodges_lehmann(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The Hodges-Lehmann estimate of the centre of ``values`` (the median of the Walsh averages
    ``(x_i + x_j) / 2``, ``i <= j``) and its distribution-free interval from the Wilcoxon
    signed-rank statistic: ``(W_(k+1), W_(M-k))`` over the ``M = n(n+1)/2`` sorted Walsh
    averages, ``k`` the statistic's lower critical value (normal approximation with continuity
    correction, rounded down so that coverage is at least ``confidence``). It is robust (an
    outlier round moves it little, like the median) and about 95% as efficient as the mean
    under normal noise (the median: 64%), so an interval of a given width takes about a third
    fewer rounds than the median's. scipy has the test (``wilcoxon``) but not this interval.

    ``low`` and ``high`` are NaN when ``n`` is too small for the confidence (n < 6 at 95%).
    """
    xs = np.asarray(values, dtype=float)
    n = len(xs)
    if n == 0:
        raise ValueError("hodges_lehmann of an empty sequence")
    i, j = np.triu_indices(n)
    walsh = np.sort((xs[i] + xs[j]) / 2.0)
    estimate = float(np.median(walsh))
    m = len(walsh)
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    k = math.floor(n * (n + 1) / 4.0 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0) - 0.5)
    if k < 0 or n < 6:
        return estimate, math.nan, math.nan
    return estimate, float(walsh[k]), float(walsh[m - 1 - k])
