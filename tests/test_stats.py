"""Tier 1: the median's interval from scipy equals the hand-written binomial order-statistic
interval the suite used before (so committed runs and new ones agree), on random samples."""

from __future__ import annotations

import math
import random

import pytest

from bench_lib.measuring import stats


def _hand_median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The previous implementation: the largest j with 1 - 2 P(Bin(n, 1/2) <= j-1) >= conf."""
    n = len(values)
    xs = sorted(values)
    best = None
    for j in range(1, n // 2 + 1):
        cdf = sum(math.comb(n, i) for i in range(j)) / 2**n
        if 1 - 2 * cdf >= confidence:
            best = j
        else:
            break
    return None if best is None else (xs[best - 1], xs[n - best])


@pytest.mark.parametrize("n", [1, 2, 5, 6, 7, 8, 11, 15, 16, 31, 40])
def test_scipy_interval_equals_the_hand_binomial_one(n: int) -> None:
    rng = random.Random(n)
    for _ in range(20):
        values = [rng.lognormvariate(0, 0.3) for _ in range(n)]
        assert stats.median_ci(values) == _hand_median_ci(values)
        assert stats.median_ci(values, 0.9) == _hand_median_ci(values, 0.9)


def test_quantiles_are_numpy_linear_interpolation() -> None:
    assert stats.quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.1) == pytest.approx(1.4)
    assert stats.median_ci([]) is None
    with pytest.raises(ValueError, match="empty"):
        stats.quantile([], 0.5)
