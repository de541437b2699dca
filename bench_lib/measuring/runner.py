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

import contextlib
import dataclasses
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..record import FIELDS, make_record
from . import adapters, cost, devices, memory, phases, stats, variants, verify
from .budget import Budget
from .devices import DeviceUnavailable
from .families import family_size, family_sizes
from .spec import Case
from .training import Workload, build_workload, freeze_summary

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


def _calibration_steps(w: Workload) -> int:
    """Steps before timing: a compiled case runs one more, so that its last one runs compiled
    code (a late freeze recompiles in its second step)."""
    return max(CALIBRATION_STEPS, w.mechanism.warm_steps) + (w.case.compile == "on")


def _calibrate(w: Workload) -> tuple[float, float]:
    """Run the first steps (allocations, lazy init, late freezes, compiles) and return the last
    one's time and how much longer the others took than it (``compile_s`` when compiled)."""
    times = []
    for _ in range(_calibration_steps(w)):
        t0 = stats.Clock.now()
        w.step()
        times.append(stats.Clock.now() - t0)
    return times[-1], max(0.0, sum(times) - len(times) * times[-1])


def _param_count(params: list[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _case_fields(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "scenario": case.scenario,
        "model": case.model,
        "factory": case.factory or None,
        "depth": case.depth,
        "width": case.width,
        "batch_size": case.batch_size,
        "seq_len": family_size(case, "seq_len"),
        "image_size": family_size(case, "image_size"),
        "family_sizes": family_sizes(case),
        "pattern": case.pattern,
        "frozen_blocks": list(case.frozen_blocks),
        "freeze_globs": list(case.freeze) if case.freeze else None,
        "mechanism": case.mechanism,
        "frozen_mode": case.frozen_mode,
        "optimizer": case.optimizer,
        "device": case.device,
        "dtype": case.dtype,
        "threads": case.threads,
        "seed": case.seed,
        "amp": case.amp,
        "compile": case.compile,
        "checkpoint": case.checkpoint,
        "adapter": case.adapter,
        "lora_rank": case.lora_rank or None,
        **freeze_summary(case),  # n_blocks, frozen_param_names, frozen_modules, tied_frozen
    }


class _PassClock:
    """Wall seconds of each pass of a case, for ``pass_seconds`` (where a case's time goes)."""

    def __init__(self, out: dict[str, Any]) -> None:
        self.seconds: dict[str, float] = {}
        out["pass_seconds"] = self.seconds

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 6)


#: Step FLOPs of each baseline, counted once per process: every case of a group divides by the
#: same baseline count, and counting it again per case would be time spent twice.
_BASELINE_FLOPS: dict[Case, int] = {}


def _baseline_flops(base: Workload) -> int:
    key = base.case
    if key not in _BASELINE_FLOPS:
        _BASELINE_FLOPS[key] = cost.count_step_flops(base).total
    return _BASELINE_FLOPS[key]


def _measure(
    case: Case, budget: Budget, time_steps: TimeSteps, out: dict[str, Any], clock: _PassClock
) -> None:
    """Fill ``out`` pass by pass, so that a failure keeps what was measured before it."""
    with clock("build"):
        w = build_workload(case)
    out["threads"] = torch.get_num_threads()
    out["trainable_params"] = _param_count(w.trainable_intended)
    out["frozen_params"] = _param_count(w.frozen_params)
    out["adapter_params"] = adapters.adapter_param_count(w.plan)
    _release()
    # Dynamo's work is counted over the case's own first steps and timed rounds, before any
    # measurement pass (and before its baseline twin compiles its own code).
    with variants.CompileWatch(case.compile == "on") as watch:
        with clock("calibration"):
            step_s, compile_s = _calibrate(w)
        rounds = budget.rounds_for(step_s)
        out["warmup_rounds"] = _calibration_steps(w) + budget.warmup_rounds
        out["rounds"] = rounds
        out["gc_enabled"] = gc.isenabled()
        with clock("timed"):
            time_steps(w.step, budget.warmup_rounds, rounds)
    if watch.counts is not None:
        out.update(compile_s=compile_s, **dataclasses.asdict(watch.counts))
        variants.check_compiled(watch.counts)

    # The baseline side of the pairs; for the baseline case itself an identical twin, so that
    # its ratio shows the noise floor (A against A').
    with clock("ratio_pairs"):
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
    with clock("flops"):
        base_flops = _baseline_flops(base)
        del base
        _release()
        flops = cost.count_step_flops(w)
    out.update(
        flops_forward=flops.forward,
        flops_backward=flops.backward,
        flops_ratio=flops.total / base_flops if base_flops and flops.total else None,
        flops_uncounted_ops=list(flops.uncounted_ops),
    )
    if (twin := variants.axis_twin(case)) is not None:
        # What the step axes cost: the same case with them at their defaults, in pairs.
        with clock("axis_twin"):
            other = build_workload(twin[1])
            _calibrate(other)
            r = stats.interleaved_ratio(w.step, other.step, budget.ratio_pairs)
            del other
            _release()
        out.update(
            axis_twin=twin[0],
            axis_twin_ratio=r.median,
            axis_twin_ratio_ci_low=r.ci_low,
            axis_twin_ratio_ci_high=r.ci_high,
        )
    # These results' field names are record keys.
    with clock("phases"):
        out.update(dataclasses.asdict(phases.measure_phases(w, budget.phase_reps)))
    with clock("memory"):
        out.update(dataclasses.asdict(memory.measure_peak_memory(w)))
        out.update(dataclasses.asdict(memory.measure_bytes_by_category(w)))


#: What the warm-up runs: on CUDA, the matrix products, convolutions and attention of every
#: built-in family in both dtypes, so that libraries allocate their lazy workspaces (cuBLASLt
#: per dtype, cuDNN) before ``workspace_bytes`` is measured rather than inside a case.
_WARM_UP_CASES: dict[str, tuple[Case, ...]] = {
    "cpu": (Case("mlp", 2, 16, 4, "prefix", (0,), "requires_grad"),),
    "cuda": tuple(
        Case(model, 2, 32, 4, "prefix", (0,), "requires_grad", device="cuda", dtype=dtype)
        for model in ("mlp", "transformer", "cnn")
        for dtype in ("float32", "bfloat16")
    ),
}


def warm_up_process(device: str) -> None:
    """Pay the process's one-time costs (thread pools, allocator, library workspaces, the
    profiler's and the FLOP counter's first use) on throwaway models, so that the first case
    measured is not the slowest for reasons of its own; then measure the workspace the libraries
    keep (``workspace_bytes``), and freeze what is alive out of gc's sight. Raises
    :class:`DeviceUnavailable` for an absent device."""
    for case in _WARM_UP_CASES[device]:
        w = build_workload(case)
        for _ in range(3):
            w.step()
        cost.count_step_flops(w)
        phases.measure_phases(w, 2)
        memory.measure_peak_memory(w)
        memory.measure_bytes_by_category(w)
        del w
        _release()
    memory.measure_workspace(devices.resolve(device))
    # Everything alive now (pytest, torch's and the libraries' Python objects: hundreds of
    # thousands) goes into gc's permanent generation: each gc.collect() between passes then
    # walks only what cases create (0.16 s a call before, microseconds after), and so does the
    # census of foreign tensors. No tensor of ours is alive at this point.
    gc.collect()
    gc.freeze()


def measure_case(case: Case, budget: Budget, time_steps: TimeSteps) -> dict[str, Any]:
    """Measure ``case`` and return its record (see :mod:`bench_lib.record`).

    Raises only :class:`~bench_lib.devices.DeviceUnavailable` (the caller skips the case);
    every other failure is recorded in ``status`` / ``status_message``.
    """
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(_case_fields(case))
    out.update(status="ok", flops_uncounted_ops=[], ratio_samples=[])
    clock = _PassClock(out)
    try:
        with variants.compile_scope(case):  # dynamo reset before and after a compiled case
            with clock("validity"):
                v = verify.check_case(case)
            out.update(
                valid=v.valid,
                verdict=v.verdict,
                verdict_detail=v.detail,
                verdict_steps=verify.CHECK_STEPS,
                grad_rtol=verify.tolerance(case),
            )
            if v.verdict == "error":
                # The mechanism cannot run a step at all: nothing else can be measured.
                out.update(status="error", status_message=f"the mechanism raised: {v.detail}")
                return make_record(out)
            _measure(case, budget, time_steps, out, clock)
    except DeviceUnavailable:
        raise
    except Exception as e:
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        if isinstance(e, variants.compile_errors()):
            cause = e.__cause__ or getattr(e, "inner_exception", None)
            if cause is not None:  # dynamo's first line says only which backend raised
                message += f" {type(cause).__name__}: {str(cause).splitlines()[0]}"
            message = f"compile failed: {message}"
        out.update(status="oom" if is_oom(e) else "error", status_message=message[:500])
    finally:
        _release()
    return make_record(out)
