"""The freeze-bench sweep: one benchmark per case, parametrized by the root conftest.py.

Outcomes: a measured case passes and its record is the benchmark's ``extra_info``. A case whose
mechanism raises (a trap such as ``inference_mode_nocopy``) or that runs out of memory is an
expected finding: its record is kept and the test is marked xfail. Any other failure fails the
test, with its record kept all the same. Records of cases that never reached the timed loop go
to the JSON's ``freeze_bench.failed`` list, since pytest-benchmark only writes timed benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from bench_lib.measuring.budget import Budget
from bench_lib.measuring.devices import DeviceUnavailable
from bench_lib.measuring.runner import measure_case, warm_up_process
from bench_lib.measuring.spec import Case

_warmed: set[str] = set()


class ReplayClock:
    """A timer that hands pytest-benchmark recorded durations: each pair of calls (start, end)
    is one value apart."""

    def __init__(self, values: Sequence[float]) -> None:
        self._values = list(values)
        self._t = 0.0
        self._calls = 0

    def __call__(self) -> float:
        if self._calls % 2 == 1 and self._values:
            self._t += self._values.pop(0)
        self._calls += 1
        return self._t

    def __str__(self) -> str:
        return "freeze_bench.ReplayClock (values timed in the decision group)"


def _nothing() -> None:
    return None


def test_train_step(
    benchmark: Any, case_params: dict[str, Any], bench_budget: Budget, bench_session: Any
) -> None:
    case = Case.from_dict(case_params)
    if case.device not in _warmed:
        try:
            warm_up_process(case.device)
        except DeviceUnavailable as e:
            pytest.skip(str(e))
        _warmed.add(case.device)
    benchmark.group = case.baseline().id
    benchmark.name = case.id

    def time_steps(values: Sequence[float]) -> None:
        # The values were timed in the case's decision group, beside the other members;
        # pytest-benchmark's statistics are made from them by replaying them through its
        # timer (one round per value, one iteration each).
        benchmark._timer = ReplayClock(values)
        benchmark.pedantic(_nothing, rounds=len(values), warmup_rounds=0, iterations=1)

    def start(c: Case) -> Any:
        # A parallel case's workers are shared by its set-up (its group's members, then each
        # member's passes); the session stops them after the set-up's last case.
        return bench_session.launcher(c).start(c, bench_budget)

    try:
        timing = bench_session.timing(case, bench_budget, start)
        launcher = bench_session.launcher(case)
        record = measure_case(case, bench_budget, time_steps, launcher, timing=timing)
    except DeviceUnavailable as e:
        pytest.skip(str(e))
    entry = None
    if benchmark.stats is not None and not benchmark.has_error:
        benchmark.extra_info.update(record)
        entry = benchmark.stats.as_dict(include_data=True)
    bench_session.add_record(case, record, entry)
    if record["status"] == "oom":
        pytest.xfail(f"out of memory: {record['status_message']}")
    if record["status"] == "error":
        if record["verdict"] == "error":
            pytest.xfail(record["status_message"])
        pytest.fail(record["status_message"], pytrace=False)
