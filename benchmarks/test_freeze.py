"""The freeze-bench sweep: one benchmark per case, parametrized by the root conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench_lib.devices import DeviceUnavailable
from bench_lib.runner import Budget, measure_case
from bench_lib.spec import Case


def test_train_step(benchmark: Any, case_params: dict[str, Any], bench_budget: Budget) -> None:
    case = Case.from_dict(case_params)
    benchmark.group = case.baseline().id
    benchmark.name = case.id

    def time_steps(step: Callable[[], None], warmup_rounds: int, rounds: int) -> None:
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)

    try:
        record = measure_case(case, bench_budget, time_steps)
    except DeviceUnavailable as e:
        pytest.skip(str(e))
    benchmark.extra_info.update(record)
