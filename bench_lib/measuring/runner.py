"""Measure one case: timed rounds (through a callback), then separate measurement passes.

The timed loop is owned by the caller (pytest-benchmark's ``pedantic`` in ``benchmarks/``), so
this module stays free of pytest. Order: launch, validity check (fresh models), calibration and
warm-up, timed rounds, interleaved ratio pairs against the baseline, FLOPs, phase times, peak
memory, bytes by category, communication. Nothing but the step runs inside the timed loop.

Where the workload runs is a launcher's business (:mod:`bench_lib.measuring.launcher`): in this
process, or on torch.distributed workers for a parallel case; the passes are the same.

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
from . import cost, devices, memory, phases, stats, variants, verify
from .budget import Budget
from .devices import DeviceUnavailable
from .families import family_size, family_sizes
from .launcher import CaseRun, Launcher, calibrate, launcher_for, release
from .spec import Case
from .training import build_workload, freeze_summary

__all__ = ["Budget", "TimeSteps", "is_oom", "measure_case", "warm_up_process"]

#: ``time_steps(step, warmup_rounds, rounds)``: run ``step`` in a timed loop and keep the samples.
TimeSteps = Callable[[Callable[[], None], int, int], None]

_OOM_TYPES: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if t
)


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError by message)."""
    if isinstance(e, (*_OOM_TYPES, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


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
        "parallel": case.parallel,
        "world_size": case.world,
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


def _measure(
    run: CaseRun, budget: Budget, time_steps: TimeSteps, out: dict[str, Any], clock: _PassClock
) -> None:
    """Fill ``out`` pass by pass, so that a failure keeps what was measured before it."""
    case: Case = run.case
    with clock("build"):
        info = run.build()
    out["threads"] = info.threads
    out["trainable_params"] = info.trainable_params
    out["frozen_params"] = info.frozen_params
    out["adapter_params"] = info.adapter_params
    release()
    # Dynamo's work is counted over the case's own first steps and timed rounds, before any
    # measurement pass (and before its baseline twin compiles its own code).
    with variants.CompileWatch(case.compile == "on") as watch:
        with clock("calibration"):
            rounds = budget.rounds_for(run.calibrate())
        out["warmup_rounds"] = info.calibration_steps + budget.warmup_rounds
        out["rounds"] = rounds
        out["gc_enabled"] = gc.isenabled()
        with clock("timed"):
            time_steps(run.step, budget.warmup_rounds, rounds)
    if watch.counts is not None:
        out.update(compile_s=run.compile_s, **dataclasses.asdict(watch.counts))
        variants.check_compiled(watch.counts)

    # The baseline side of the pairs; for the baseline case itself an identical twin, so that
    # its ratio shows the noise floor (A against A').
    with clock("ratio_pairs"):
        run.build_baseline()
        ratio = stats.interleaved_ratio(run.step, run.baseline_step, budget.ratio_pairs)
    out.update(
        time_ratio=ratio.median,
        time_ratio_ci_low=ratio.ci_low,
        time_ratio_ci_high=ratio.ci_high,
        ratio_pairs=ratio.pairs,
        ratio_samples=list(ratio.ratios),
    )
    with clock("flops"):
        flops, base_flops = run.flops()  # drops the baseline twin
    out.update(
        flops_forward=flops.forward,
        flops_backward=flops.backward,
        flops_ratio=flops.total / base_flops if base_flops and flops.total else None,
        flops_uncounted_ops=list(flops.uncounted_ops),
    )
    if (twin := variants.axis_twin(case)) is not None:
        # What the step axes cost: the same case with them at their defaults, in pairs (step
        # axes run in this process only: profiles never cross them with a parallel set-up).
        with clock("axis_twin"):
            other = build_workload(twin[1])
            calibrate(other)
            r = stats.interleaved_ratio(run.step, other.step, budget.ratio_pairs)
            del other
            release()
        out.update(
            axis_twin=twin[0],
            axis_twin_ratio=r.median,
            axis_twin_ratio_ci_low=r.ci_low,
            axis_twin_ratio_ci_high=r.ci_high,
        )
    # These results' field names are record keys.
    with clock("phases"):
        out.update(dataclasses.asdict(run.phases(budget.phase_reps)))
    with clock("memory"):
        out.update(run.memory())
        out.update(dataclasses.asdict(run.bytes_by_category()))
    with clock("comm"):
        out.update(run.comm())


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
        release()
    memory.measure_workspace(devices.resolve(device))
    # Everything alive now (pytest, torch's and the libraries' Python objects: hundreds of
    # thousands) goes into gc's permanent generation: each gc.collect() between passes then
    # walks only what cases create (0.16 s a call before, microseconds after), and so does the
    # census of foreign tensors. No tensor of ours is alive at this point.
    gc.collect()
    gc.freeze()


def measure_case(
    case: Case, budget: Budget, time_steps: TimeSteps, launcher: Launcher | None = None
) -> dict[str, Any]:
    """Measure ``case`` and return its record (see :mod:`bench_lib.record`), with ``launcher``
    (by default :func:`~bench_lib.measuring.launcher.launcher_for` the case: in this process,
    or on torch.distributed workers for a parallel case).

    Raises only :class:`~bench_lib.devices.DeviceUnavailable` (the caller skips the case);
    every other failure is recorded in ``status`` / ``status_message``.
    """
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(_case_fields(case))
    out.update(status="ok", flops_uncounted_ops=[], ratio_samples=[])
    clock = _PassClock(out)
    run: CaseRun | None = None
    try:
        with variants.compile_scope(case):  # dynamo reset before and after a compiled case
            with clock("launch"):
                run = (launcher or launcher_for(case)).start(case, budget)
            with clock("validity"):
                v = run.check()
            out.update(
                valid=v.valid,
                verdict=v.verdict,
                verdict_detail=v.detail,
                verdict_steps=verify.CHECK_STEPS,
                grad_rtol=verify.tolerance(case),
            )
            if v.verdict == "error":
                # The mechanism cannot run a step at all: nothing else can be measured.
                under = f" under {case.parallel}" if case.is_parallel else ""
                out.update(
                    status="error", status_message=f"the mechanism raised{under}: {v.detail}"
                )
                return make_record(out)
            _measure(run, budget, time_steps, out, clock)
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
        if run is not None:
            with clock("stop"):  # the record's pass_seconds is this very dict
                run.close()
        del run
        release()
    return make_record(out)
