"""The interface between the runner and where a case's workload runs, and the helpers both
sides use: a :class:`Launcher` starts a :class:`CaseRun` for one case, which the runner
(:mod:`bench_lib.measuring.runner`) drives pass by pass in this order: validity check, build,
the effects' watch over calibration and the timed steps, the baseline twin and the interleaved
pairs, FLOPs (which drops the twin), the axis twin, phase times, peak memory, bytes by category
and communication. The runner never knows where the steps run.

The implementations: :class:`~bench_lib.measuring.launcher.InlineRun` (this process) and
:class:`~bench_lib.measuring.parallel.coordinator.TorchRun` (torch.distributed workers). This
module imports neither, so that both import it and nothing imports back (no cycle).
"""

from __future__ import annotations

import gc
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

from . import effects, stats
from .budget import Budget
from .flops import StepFlops
from .memory import CPU_FOREIGN_SLACK_BYTES, ByteCounts, reachable_tensor_bytes
from .phases import PhaseTimes
from .spec import Case
from .training import Workload
from .verify import Verdict

__all__ = [
    "CALIBRATION_STEPS",
    "BuildInfo",
    "CaseRun",
    "Launcher",
    "calibration_steps",
    "is_oom",
    "release",
    "time_first_steps",
]

CALIBRATION_STEPS = 2


_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t
)


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError by message)."""
    if isinstance(e, (*_OOM_TYPES, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


#: A collection slower than this walked objects that arrived since the last freeze (a library
#: imported by a case: transformers, peft, inductor), not a case's garbage (milliseconds).
SLOW_COLLECT_S = 0.02


def release(settle: bool = False) -> None:
    """Collect garbage and hand cached CUDA memory back (between passes).

    ``settle`` (only where nothing of a case is alive: after it, or after its group): when
    the collection was slow, move what survived it into gc's permanent generation, as the
    warm-up does (:func:`~bench_lib.measuring.runner.warm_up_process`). A library a case
    imports lazily adds hundreds of thousands of objects that every later collection walks
    again: measured on the quick profile, 0.16 s a collection after the first HF case, 57 s
    of its 154 s in all. Not while CPU tensors of more than
    :data:`~bench_lib.measuring.memory.CPU_FOREIGN_SLACK_BYTES` are alive: frozen, a case's
    leak would hide from the next case's census (``foreign_bytes``)."""
    t0 = time.perf_counter()
    gc.collect()
    if (
        settle
        and time.perf_counter() - t0 > SLOW_COLLECT_S
        and reachable_tensor_bytes(torch.device("cpu")) <= CPU_FOREIGN_SLACK_BYTES
    ):
        gc.freeze()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def calibration_steps(w: Workload) -> int:
    """Steps before timing: the mechanism's warm steps (a late freeze happens only then), and
    the steps the case's effects add (a compiled case one more, so that its last one runs
    compiled code: a late freeze recompiles in its second step)."""
    return max(CALIBRATION_STEPS, w.mechanism.warm_steps) + effects.calibration_steps(w.case)


def time_first_steps(step: Callable[[], object], n: int) -> tuple[float, float]:
    """Run ``step`` ``n`` times and return the last run's seconds and how much longer the
    others took than it (``compile_s`` when compiled)."""
    times = []
    for _ in range(n):
        t0 = stats.Clock.now()
        step()
        times.append(stats.Clock.now() - t0)
    return times[-1], max(0.0, sum(times) - len(times) * times[-1])


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

    def value(self, warm: int, steps: int) -> float:
        """One timed value: ``warm`` untimed steps, then the seconds per step of ``steps``
        more. Where the steps run elsewhere (workers), the value is timed there, so that the
        messages to them are not in it."""
        return stats.timed_value(self.step, warm, steps)

    @abstractmethod
    def build_baseline(self) -> None:
        """Build and calibrate the baseline twin (the case itself for a baseline: A against A')."""

    @property
    @abstractmethod
    def baseline_step(self) -> Callable[[], None]:
        """One step of the baseline twin."""

    @abstractmethod
    def start_watch(self) -> None:
        """Start the active effects' watch over the first steps, where the steps run."""

    @abstractmethod
    def stop_watch(self) -> list[dict[str, dict[str, Any]]]:
        """Stop it: every rank's counts by axis (one entry in process), for
        :func:`~bench_lib.measuring.effects.watch_record`."""

    @abstractmethod
    def build_axis_twin(self, twin: Case) -> Callable[[], None]:
        """Build and calibrate ``twin`` (the case with its step axes at their defaults) where
        the case runs; return its step."""

    @abstractmethod
    def drop_axis_twin(self) -> None:
        """Drop the axis twin."""

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

    def close(self) -> None:
        """Release what the launcher holds beyond its runs (workers shared by the runs of one
        set-up); nothing by default."""
        return None
