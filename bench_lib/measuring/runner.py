"""Measure one case: timed rounds (through a callback), then separate measurement passes.

The timed loop is owned by the caller (pytest-benchmark's ``pedantic`` in ``benchmarks/``), so
this module stays free of pytest. Order: validity check (fresh models), calibration and warm-up,
timed rounds, interleaved ratio pairs against the baseline, FLOPs, phase times, peak memory,
bytes by category. Nothing but the step runs inside the timed loop.

A failure never escapes as an exception: an out-of-memory error gives ``status='oom'``, any
other exception ``status='error'``, each with the message, and what was measured before the
failure is kept.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from typing import Any

import torch

from ..record import FIELDS, make_record
from . import cost, memory, phases, stats, verify
from .budget import Budget
from .devices import DeviceUnavailable
from .models import family_size
from .spec import Case
from .training import Workload, build_workload

__all__ = ["Budget", "TimeSteps", "is_oom", "measure_case", "warm_up_process"]

#: ``time_steps(step, warmup_rounds, rounds)``: run ``step`` in a timed loop and keep the samples.
TimeSteps = Callable[[Callable[[], None], int, int], None]

CALIBRATION_STEPS = 2
_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t
)


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError by message)."""
    if isinstance(e, (*_OOM_TYPES, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _calibrate(w: Workload) -> float:
    """Run the first steps (allocations, lazy init, late freezes) and return the last one's time."""
    elapsed = 0.0
    for _ in range(max(CALIBRATION_STEPS, w.mechanism.warm_steps)):
        t0 = stats.Clock.now()
        w.step()
        elapsed = stats.Clock.now() - t0
    return elapsed


def _param_count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _case_fields(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "scenario": case.scenario,
        "model": case.model,
        "depth": case.depth,
        "width": case.width,
        "batch_size": case.batch_size,
        "seq_len": family_size(case, "seq_len"),
        "image_size": family_size(case, "image_size"),
        "pattern": case.pattern,
        "frozen_blocks": list(case.frozen_blocks),
        "mechanism": case.mechanism,
        "frozen_mode": case.frozen_mode,
        "optimizer": case.optimizer,
        "device": case.device,
        "dtype": case.dtype,
        "threads": case.threads,
        "seed": case.seed,
    }


def _measure(case: Case, budget: Budget, time_steps: TimeSteps, out: dict[str, Any]) -> None:
    """Fill ``out`` pass by pass, so that a failure keeps what was measured before it."""
    w = build_workload(case)
    out["threads"] = torch.get_num_threads()
    out["trainable_params"] = _param_count(w.trainable_intended)
    out["frozen_params"] = _param_count(w.frozen_params)
    _release()
    rounds = budget.rounds_for(_calibrate(w))
    out["warmup_rounds"] = max(CALIBRATION_STEPS, w.mechanism.warm_steps) + budget.warmup_rounds
    out["rounds"] = rounds
    out["gc_enabled"] = gc.isenabled()
    time_steps(w.step, budget.warmup_rounds, rounds)

    # The baseline side of the pairs; for the baseline case itself an identical twin, so that
    # its ratio shows the noise floor (A against A').
    base = build_workload(case.baseline())
    _calibrate(base)
    ratio = stats.interleaved_ratio(w.step, base.step, budget.ratio_pairs)
    out.update(
        time_ratio=ratio.median,
        time_ratio_ci_low=ratio.ci_low,
        time_ratio_ci_high=ratio.ci_high,
        ratio_pairs=ratio.pairs,
        ratio_samples=list(ratio.ratios),
    )
    base_flops = cost.count_step_flops(base).total
    del base
    _release()

    flops = cost.count_step_flops(w)
    out.update(
        flops_forward=flops.forward,
        flops_backward=flops.backward,
        flops_ratio=flops.total / base_flops if base_flops and flops.total else None,
        flops_uncounted_ops=list(flops.uncounted_ops),
    )
    # These results' field names are record keys.
    out.update(dataclasses.asdict(phases.measure_phases(w, budget.phase_reps)))
    out.update(dataclasses.asdict(memory.measure_peak_memory(w)))
    out.update(dataclasses.asdict(memory.measure_bytes_by_category(w)))


def warm_up_process(device: str) -> None:
    """Pay the process's one-time costs (thread pools, allocator, the profiler's and the FLOP
    counter's first use) on a throwaway model, so that the first case measured is not the
    slowest for reasons of its own. Measures nothing."""
    w = build_workload(Case("mlp", 2, 16, 4, "prefix", (0,), "requires_grad", device=device))
    for _ in range(3):
        w.step()
    cost.count_step_flops(w)
    phases.measure_phases(w, 2)
    memory.measure_peak_memory(w)
    memory.measure_bytes_by_category(w)
    _release()


def measure_case(case: Case, budget: Budget, time_steps: TimeSteps) -> dict[str, Any]:
    """Measure ``case`` and return its record (see :mod:`bench_lib.record`).

    Raises only :class:`~bench_lib.devices.DeviceUnavailable` (the caller skips the case);
    every other failure is recorded in ``status`` / ``status_message``.
    """
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(_case_fields(case))
    out.update(status="ok", flops_uncounted_ops=[], ratio_samples=[])
    try:
        v = verify.check_case(case)
        out.update(
            valid=v.valid,
            verdict=v.verdict,
            verdict_detail=v.detail,
            verdict_steps=verify.CHECK_STEPS,
            grad_rtol=verify.GRAD_RTOL[case.dtype],
        )
        if v.verdict == "error":
            # The mechanism cannot run a step at all: nothing else can be measured.
            out.update(status="error", status_message=f"the mechanism raised: {v.detail}")
            return make_record(out)
        _measure(case, budget, time_steps, out)
    except DeviceUnavailable:
        raise
    except Exception as e:
        out.update(
            status="oom" if is_oom(e) else "error",
            status_message=f"{type(e).__name__}: {e}".splitlines()[0][:500],
        )
    finally:
        _release()
    return make_record(out)
