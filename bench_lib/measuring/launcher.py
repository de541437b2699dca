"""Where a case's workload runs: the launcher interface, and the in-process launcher.

A :class:`Launcher` starts a :class:`CaseRun` for one case: the object the runner
(:mod:`bench_lib.measuring.runner`) drives pass by pass, in this order: validity check, build,
calibration, the timed steps, the baseline twin and the interleaved pairs, FLOPs (which drops
the twin), phase times, peak memory, bytes by category and communication. The runner never
knows where the steps run.

* :class:`InlineLauncher` runs everything in this process: every case with ``parallel='none'``.
* :class:`~bench_lib.measuring.parallel.launcher.TorchLauncher` runs the case on ``world``
  worker processes started with torch's own launcher, each holding its rank's workload, and
  drives every step from here (``bench_lib.measuring.parallel``).

:func:`launcher_for` picks one for a case from :data:`LAUNCHERS`.
"""

from __future__ import annotations

import dataclasses
import gc
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

from . import adapters, cost, memory, phases, stats, verify
from .budget import Budget
from .cost import StepFlops
from .memory import ByteCounts
from .phases import PhaseTimes
from .spec import Case
from .training import Workload, build_workload
from .verify import Verdict

__all__ = [
    "CALIBRATION_STEPS",
    "LAUNCHERS",
    "BuildInfo",
    "CaseRun",
    "InlineLauncher",
    "InlineRun",
    "Launcher",
    "calibrate",
    "launcher_for",
    "release",
]

CALIBRATION_STEPS = 2


def release() -> None:
    """Collect garbage and hand cached CUDA memory back (between passes)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def calibration_steps(w: Workload) -> int:
    """Steps before timing: the mechanism's warm steps (a late freeze happens only then), and a
    compiled case one more, so that its last one runs compiled code (a late freeze recompiles
    in its second step)."""
    return max(CALIBRATION_STEPS, w.mechanism.warm_steps) + (w.case.compile == "on")


def time_first_steps(step: Callable[[], object], n: int) -> tuple[float, float]:
    """Run ``step`` ``n`` times and return the last run's seconds and how much longer the
    others took than it (``compile_s`` when compiled)."""
    times = []
    for _ in range(n):
        t0 = stats.Clock.now()
        step()
        times.append(stats.Clock.now() - t0)
    return times[-1], max(0.0, sum(times) - len(times) * times[-1])


def calibrate(w: Workload) -> tuple[float, float]:
    """Run the first steps (allocations, lazy init, late freezes, compiles): see
    :func:`time_first_steps`."""
    return time_first_steps(w.step, calibration_steps(w))


@dataclass(frozen=True)
class BuildInfo:
    """What the build pass tells the record: threads in force, parameters meant to train and
    frozen (elements), and the mechanism's warm steps."""

    threads: int
    trainable_params: int
    frozen_params: int
    warm_steps: int
    #: Untimed steps before the timed rounds (:func:`calibration_steps`).
    calibration_steps: int
    #: Elements of the adapters (``None`` without one).
    adapter_params: int | None = None


class CaseRun(ABC):
    """One case's workload, wherever it runs, driven pass by pass (the order is the module
    docstring's). Every method raises on failure; :meth:`close` releases everything of the case
    and may be called at any point, more than once."""

    #: The case being run.
    case: Case

    @abstractmethod
    def check(self) -> Verdict:
        """The validity verdict (fresh models; the mechanism raising is verdict ``error``)."""

    @abstractmethod
    def build(self) -> BuildInfo:
        """Build the case's workload."""

    #: Seconds the calibration steps took beyond the last one's (a compiled case's compile
    #: time; ``None`` until :meth:`calibrate` ran, or where a launcher does not measure it).
    compile_s: float | None = None

    @abstractmethod
    def calibrate(self) -> float:
        """Run the calibration steps; the last one's seconds."""

    @property
    @abstractmethod
    def step(self) -> Callable[[], None]:
        """One training step of the case (all ranks, synchronised), for the timed loop."""

    @abstractmethod
    def build_baseline(self) -> None:
        """Build and calibrate the baseline twin (the case itself for a baseline: A against A')."""

    @property
    @abstractmethod
    def baseline_step(self) -> Callable[[], None]:
        """One step of the baseline twin."""

    @abstractmethod
    def flops(self) -> tuple[StepFlops, int]:
        """The case's step FLOPs and the baseline's total; drops the baseline twin."""

    @abstractmethod
    def phases(self, reps: int) -> PhaseTimes:
        """Phase times over ``reps`` instrumented steps."""

    @abstractmethod
    def memory(self) -> dict[str, Any]:
        """Peak memory record fields (those of :class:`~bench_lib.measuring.memory.MemoryResult`,
        and ``rank_peak_memory_bytes`` where there are ranks)."""

    @abstractmethod
    def bytes_by_category(self) -> ByteCounts:
        """Bytes of parameters, gradients, optimizer state and saved activations."""

    @abstractmethod
    def comm(self) -> dict[str, Any]:
        """Communication record fields (``comm_bytes``, ``ddp_buckets``); empty in-process."""

    @abstractmethod
    def close(self) -> None:
        """Release everything of the case (for workers: every process is gone on return)."""

    def __enter__(self) -> CaseRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Launcher(ABC):
    """Starts a :class:`CaseRun` for a case."""

    #: Registry key (the ``parallel`` values a launcher serves are in :func:`launcher_for`).
    name: str

    @abstractmethod
    def start(self, case: Case, budget: Budget) -> CaseRun:
        """Start ``case``'s run (raises :class:`~bench_lib.measuring.devices.DeviceUnavailable`
        where its devices are absent, and anything else when it cannot start)."""


class InlineRun(CaseRun):
    """The case in this process: the workload, its baseline twin and the passes on them."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._w: Workload | None = None
        self._base: Workload | None = None

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

    def flops(self) -> tuple[StepFlops, int]:
        assert self._base is not None, "build_baseline() first"
        base_flops = _baseline_flops(self._base)
        self._base = None
        release()
        return cost.count_step_flops(self.w), base_flops

    def phases(self, reps: int) -> PhaseTimes:
        return phases.measure_phases(self.w, reps)

    def memory(self) -> dict[str, Any]:
        return dataclasses.asdict(memory.measure_peak_memory(self.w))

    def bytes_by_category(self) -> ByteCounts:
        return memory.measure_bytes_by_category(self.w)

    def comm(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._w = self._base = None


#: Step FLOPs of each baseline, counted once per process: every case of a group divides by the
#: same baseline count, and counting it again per case would be time spent twice.
_BASELINE_FLOPS: dict[Case, int] = {}


def _baseline_flops(base: Workload) -> int:
    key = base.case
    if key not in _BASELINE_FLOPS:
        _BASELINE_FLOPS[key] = cost.count_step_flops(base).total
    return _BASELINE_FLOPS[key]


class InlineLauncher(Launcher):
    """Runs the case in this process."""

    name = "inline"

    def start(self, case: Case, budget: Budget) -> CaseRun:
        return InlineRun(case)


def _torch_launcher() -> Launcher:
    from .parallel.launcher import TorchLauncher  # torch.distributed only where it is used

    return TorchLauncher()


#: Launcher factories by name: ``inline`` for ``parallel='none'``, ``torch`` for the others.
LAUNCHERS: dict[str, Callable[[], Launcher]] = {"inline": InlineLauncher, "torch": _torch_launcher}


def launcher_for(case: Case) -> Launcher:
    """The launcher of ``case``: in-process without a parallel set-up, torch's otherwise."""
    return LAUNCHERS["torch" if case.is_parallel else "inline"]()
