"""Measure one case: timed rounds (through a callback), then separate measurement passes.

The timed loop is owned by the caller (pytest-benchmark's ``pedantic`` in ``benchmarks/``), so
this module stays free of pytest. Order of passes: calibration and warm-up, timed rounds,
interleaved ratio pairs against the baseline, peak memory, bytes by category. Nothing but the
step runs inside the timed loop.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import memory, stats
from .record import make_record
from .spec import Case
from .training import Workload, build_workload

__all__ = ["Budget", "TimeSteps", "measure_case"]

#: ``time_steps(step, warmup_rounds, rounds)``: run ``step`` in a timed loop and keep the samples.
TimeSteps = Callable[[Callable[[], None], int, int], None]

CALIBRATION_STEPS = 2


@dataclass(frozen=True)
class Budget:
    """How much time a case gets. ``rounds`` is sized to about ``target_time_s`` of timed steps,
    clamped to ``[min_rounds, max_rounds]``."""

    warmup_rounds: int = 3
    target_time_s: float = 0.5
    min_rounds: int = 5
    max_rounds: int = 200
    ratio_pairs: int = 15

    def __post_init__(self) -> None:
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError(
                f"rounds bounds [{self.min_rounds}, {self.max_rounds}] must satisfy 1 <= min <= max"
            )
        if self.ratio_pairs < 1 or self.warmup_rounds < 0 or self.target_time_s <= 0:
            raise ValueError(f"invalid budget {self}")

    def rounds_for(self, step_seconds: float) -> int:
        if step_seconds <= 0:
            return self.max_rounds
        return max(self.min_rounds, min(self.max_rounds, math.ceil(self.target_time_s / step_seconds)))


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _calibrate(w: Workload) -> float:
    """Run the first steps (allocations, lazy init) and return the last one's duration."""
    elapsed = 0.0
    for _ in range(CALIBRATION_STEPS):
        t0 = stats.Clock.now()
        w.step()
        elapsed = stats.Clock.now() - t0
    return elapsed


def _param_count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def measure_case(case: Case, budget: Budget, time_steps: TimeSteps) -> dict[str, Any]:
    """Measure ``case`` and return its record (see :mod:`bench_lib.record`).

    Raises whatever building or running the case raises (e.g.
    :class:`~bench_lib.devices.DeviceUnavailable`).
    """
    w = build_workload(case)
    _release(w.device)
    step_s = _calibrate(w)
    rounds = budget.rounds_for(step_s)
    gc_enabled = gc.isenabled()
    time_steps(w.step, budget.warmup_rounds, rounds)

    # A second workload for the baseline side of the pairs; for the baseline case itself an
    # identical twin, so its ratio shows the noise floor (A against A').
    base = build_workload(case.baseline())
    _calibrate(base)
    ratio = stats.interleaved_ratio(w.step, base.step, budget.ratio_pairs)
    del base
    _release(w.device)

    mem = memory.measure_peak_memory(w)
    counts = memory.measure_bytes_by_category(w)
    return make_record(
        {
            "case_id": case.id,
            "scenario": case.scenario,
            "model": case.model,
            "depth": case.depth,
            "width": case.width,
            "batch_size": case.batch_size,
            "seq_len": w.model.input_shape[0] if case.model in ("transformer", "xy") else None,
            "image_size": w.model.input_shape[-1] if case.model == "cnn" else None,
            "pattern": case.pattern,
            "frozen_blocks": list(case.frozen_blocks),
            "mechanism": case.mechanism,
            "frozen_mode": case.frozen_mode,
            "optimizer": case.optimizer,
            "device": case.device,
            "dtype": case.dtype,
            "threads": torch.get_num_threads(),
            "seed": case.seed,
            "gc_enabled": gc_enabled,
            "warmup_rounds": CALIBRATION_STEPS + budget.warmup_rounds,
            "rounds": rounds,
            "status": "ok",
            "status_message": None,
            "peak_memory_bytes": mem.peak_memory_bytes,
            "peak_reserved_bytes": mem.peak_reserved_bytes,
            "memory_method": mem.memory_method,
            "rss_bytes": mem.rss_bytes,
            "param_bytes": counts.param_bytes,
            "grad_bytes": counts.grad_bytes,
            "optimizer_state_bytes": counts.optimizer_state_bytes,
            "saved_activation_bytes": counts.saved_activation_bytes,
            "trainable_params": _param_count(w.trainable),
            "frozen_params": _param_count(w.frozen_params),
            "time_ratio": ratio.median,
            "time_ratio_ci_low": ratio.ci_low,
            "time_ratio_ci_high": ratio.ci_high,
            "ratio_pairs": ratio.pairs,
            "ratio_samples": list(ratio.ratios),
        }
    )
