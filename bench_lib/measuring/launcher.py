"""Where a case's workload runs: the in-process launcher, and the choice of launcher.

The interface (:class:`~.caserun.Launcher`, :class:`~.caserun.CaseRun`) is in :mod:`.caserun`.

* :class:`InlineLauncher` runs everything in this process: every case with ``parallel='none'``.
* :class:`~bench_lib.measuring.parallel.coordinator.TorchLauncher` runs the case on ``world``
  worker processes started with torch's own launcher, each holding its rank's workload, and
  drives every step from here (``bench_lib.measuring.parallel``).

:func:`launcher_for` picks one for a case from :data:`LAUNCHERS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from . import adapters, effects, flops, memory, phases, verify
from .budget import Budget
from .caserun import BuildInfo, CaseRun, Launcher, calibration_steps, release, time_first_steps
from .flops import StepFlops
from .memory import ByteCounts
from .phases import PhaseTimes
from .spec import Case
from .training import Workload, build_workload
from .verify import Verdict

__all__ = ["LAUNCHERS", "InlineLauncher", "InlineRun", "calibrate", "launcher_for"]


def calibrate(w: Workload) -> tuple[float, float]:
    """Run the first steps (allocations, lazy init, late freezes, compiles): see
    :func:`~.caserun.time_first_steps`."""
    return time_first_steps(w.step, calibration_steps(w))


class InlineRun(CaseRun):
    """The case in this process: the workload, its baseline and axis twins and the passes."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._w: Workload | None = None
        self._base: Workload | None = None
        self._twin: Workload | None = None
        self._watch = effects.Watch(case)

    @property
    def w(self) -> Workload:
        assert self._w is not None, "build() first"
        return self._w

    def check(self) -> Verdict:
        return verify.check_case(self.case)

    def build(self) -> BuildInfo:
        self._w = build_workload(self.case)
        w = self._w
        return BuildInfo(
            threads=torch.get_num_threads(),
            trainable_params=sum(p.numel() for p in w.trainable_intended),
            frozen_params=sum(p.numel() for p in w.frozen_params),
            warm_steps=w.mechanism.warm_steps,
            calibration_steps=calibration_steps(w),
            adapter_params=adapters.adapter_param_count(w.plan),
        )

    def start_watch(self) -> None:
        self._watch.start()

    def stop_watch(self) -> list[dict[str, dict[str, Any]]]:
        return [self._watch.stop()]

    def calibrate(self) -> float:
        step_s, self.compile_s = calibrate(self.w)
        return step_s

    @property
    def step(self) -> Callable[[], None]:
        return self.w.step

    def build_baseline(self) -> None:
        self._base = build_workload(self.case.baseline())
        calibrate(self._base)

    @property
    def baseline_step(self) -> Callable[[], None]:
        assert self._base is not None, "build_baseline() first"
        return self._base.step

    def build_axis_twin(self, twin: Case) -> Callable[[], None]:
        self._twin = build_workload(twin)
        calibrate(self._twin)
        return self._twin.step

    def drop_axis_twin(self) -> None:
        self._twin = None
        release()

    def flops(self) -> tuple[StepFlops, int]:
        assert self._base is not None, "build_baseline() first"
        base_flops = _baseline_flops(self._base)
        self._base = None
        release()
        return flops.count_step_flops(self.w), base_flops

    def phases(self, reps: int) -> PhaseTimes:
        return phases.measure_phases(self.w, reps)

    def memory(self) -> dict[str, Any]:
        return dataclasses.asdict(memory.measure_peak_memory(self.w))

    def bytes_by_category(self) -> ByteCounts:
        return memory.measure_bytes_by_category(self.w)

    def comm(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._watch.stop()  # a case that failed between start_watch and stop_watch
        self._w = self._base = self._twin = None


#: Step FLOPs of each baseline, counted once per process: every case of a group divides by the
#: same baseline count, and counting it again per case would be time spent twice.
_BASELINE_FLOPS: dict[Case, int] = {}


def _baseline_flops(base: Workload) -> int:
    key = base.case
    if key not in _BASELINE_FLOPS:
        _BASELINE_FLOPS[key] = flops.count_step_flops(base).total
    return _BASELINE_FLOPS[key]


class InlineLauncher(Launcher):
    """Runs the case in this process."""

    name = "inline"

    def start(self, case: Case, budget: Budget) -> CaseRun:
        return InlineRun(case)


def _torch_launcher() -> Launcher:
    from .parallel.coordinator import TorchLauncher  # torch.distributed only where it is used

    return TorchLauncher()


#: Launcher factories by name: ``inline`` for ``parallel='none'``, ``torch`` for the others.
LAUNCHERS: dict[str, Callable[[], Launcher]] = {"inline": InlineLauncher, "torch": _torch_launcher}


def launcher_for(case: Case) -> Launcher:
    """The launcher of ``case``: in-process without a parallel set-up, torch's otherwise."""
    return LAUNCHERS["torch" if case.is_parallel else "inline"]()
