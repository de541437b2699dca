"""Measure one case: timed rounds (through a callback), then separate measurement passes.

The timed loop is owned by the caller (pytest-benchmark's ``pedantic`` in ``benchmarks/``), so
this module stays free of pytest. Order: launch, validity check (fresh models), then the passes
of :data:`PASSES`: build, calibration and warm-up, timed rounds, interleaved ratio pairs against
the baseline, FLOPs, the axis twin, phase times, peak memory, bytes by category, communication
(in smoke mode, :attr:`Budget.smoke`, only those the table marks). Nothing but the step runs
inside the timed loop. The runner never branches on an axis value: what the case's step axes
do is their effects' business (:mod:`.effects`).

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import axes as axis_table
from ..record import FIELDS, make_record
from . import devices, effects, flops, memory, phases, stats, verify
from . import group as groups
from .budget import Budget
from .caserun import CaseRun, Launcher, is_oom, release
from .devices import DeviceUnavailable
from .families import family_size, family_sizes
from .launcher import launcher_for
from .spec import Case
from .training import build_workload, freeze_summary

__all__ = ["PASSES", "Budget", "TimeSteps", "is_oom", "measure_case", "warm_up_process"]

#: ``time_steps(values)``: keep a case's timed values (seconds per step, one per round of its
#: decision group) as its benchmark samples.
TimeSteps = Callable[[Sequence[float]], None]


def _case_fields(case: Case) -> dict[str, Any]:
    """The record's identity fields: every axis's value under its record name (from the axis
    table), the family sizes, and what the freeze plan freezes."""
    return {
        "case_id": case.id,
        **axis_table.record_values(case.values()),
        "seq_len": family_size(case, "seq_len"),
        "image_size": family_size(case, "image_size"),
        "family_sizes": family_sizes(case),
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


@dataclass
class _Context:
    """What the passes of one case share: the run, the budget, the record being filled."""

    run: CaseRun
    budget: Budget
    time_steps: TimeSteps
    out: dict[str, Any]
    timing: groups.MemberTiming
    #: Seconds of the last calibration step (``None`` when calibration did not run).
    step_s: float | None = None
    #: Untimed steps the build pass says the case needs, and those the calibration pass ran.
    planned_calibration: int = 0
    calibration_steps: int = 0

    @property
    def case(self) -> Case:
        return self.run.case


def _build(c: _Context) -> None:
    info = c.run.build()
    c.planned_calibration = info.calibration_steps
    c.out.update(
        threads=info.threads,
        trainable_params=info.trainable_params,
        frozen_params=info.frozen_params,
        adapter_params=info.adapter_params,
    )
    release()


def _calibrate(c: _Context) -> None:
    # Warm the case's own run for the measurement passes (its group warmed its timed copy).
    c.step_s = c.run.calibrate()
    c.calibration_steps = c.planned_calibration


def _timed(c: _Context) -> None:
    """The case's values from its decision group's rounds, as its benchmark samples, and what
    its effects counted over its first steps there."""
    t = c.timing
    if not t.values:
        raise RuntimeError("the case's decision group timed no value of it")
    c.out.update(
        warmup_rounds=t.warmup_steps + groups.WARM_STEPS,
        rounds=len(t.values),
        gc_enabled=False,
        **t.watch,
    )
    c.time_steps(t.values)


def _ratios(c: _Context) -> None:
    """The case's ratio to its baseline and to every other member of its group, from the same
    rounds (for the baseline itself, to an identical twin: the noise floor)."""
    t = c.timing
    base = t.baseline_pair
    margin = t.summary.get("margin")
    c.out.update(
        time_ratio=base.ratio if base else None,
        time_ratio_ci_low=base.low if base else None,
        time_ratio_ci_high=base.high if base else None,
        ratio_pairs=len(t.ratio_samples),
        ratio_samples=list(t.ratio_samples),
        pair_ratios={
            other: {
                "ratio": p.ratio,
                "ci_low": p.low,
                "ci_high": p.high,
                "class": groups.classify(p, margin) if margin is not None else "unknown",
            }
            for other, p in t.pairs.items()
        },
        **t.summary,
    )


def _flops(c: _Context) -> None:
    c.run.build_baseline()
    counted, base_flops = c.run.flops()  # drops the baseline twin
    c.out.update(
        flops_forward=counted.forward,
        flops_backward=counted.backward,
        flops_ratio=counted.total / base_flops if base_flops and counted.total else None,
        flops_uncounted_ops=list(counted.uncounted_ops),
    )


def _axis_twin(c: _Context) -> None:
    """What the step axes cost: the same case with them at their defaults, in pairs, where the
    case runs (in this process or on its workers)."""
    twin = effects.axis_twin(c.case)
    if twin is None:
        return
    other_step = c.run.build_axis_twin(twin[1])
    try:
        r = stats.interleaved_ratio(c.run.step, other_step, c.budget.pairs)
    finally:
        c.run.drop_axis_twin()
    c.out.update(
        axis_twin=twin[0],
        axis_twin_ratio=r.median,
        axis_twin_ratio_ci_low=r.ci_low,
        axis_twin_ratio_ci_high=r.ci_high,
    )


# These results' field names are record keys.
def _phases(c: _Context) -> None:
    c.out.update(dataclasses.asdict(c.run.phases(c.budget.phase_reps)))


def _memory(c: _Context) -> None:
    c.out.update(c.run.memory())
    c.out.update(dataclasses.asdict(c.run.bytes_by_category()))


def _comm(c: _Context) -> None:
    c.out.update(c.run.comm())


@dataclass(frozen=True)
class _Pass:
    """One pass of a case after its validity check: its ``pass_seconds`` key, what it does,
    and whether it runs in smoke mode (:attr:`Budget.smoke`)."""

    name: str
    run: Callable[[_Context], None]
    smoke: bool


#: The passes after the validity check, in order. Smoke mode runs those marked ``smoke``; the
#: record fields of the others stay null.
PASSES: tuple[_Pass, ...] = (
    _Pass("build", _build, smoke=True),
    _Pass("calibration", _calibrate, smoke=False),
    _Pass("timed", _timed, smoke=True),
    _Pass("ratios", _ratios, smoke=True),
    _Pass("flops", _flops, smoke=False),
    _Pass("axis_twin", _axis_twin, smoke=False),
    _Pass("phases", _phases, smoke=False),
    _Pass("memory", _memory, smoke=False),
    _Pass("comm", _comm, smoke=True),
)


def _measure(
    run: CaseRun,
    budget: Budget,
    time_steps: TimeSteps,
    out: dict[str, Any],
    clock: _PassClock,
    timing: groups.MemberTiming,
) -> None:
    """Fill ``out`` pass by pass, so that a failure keeps what was measured before it."""
    context = _Context(run, budget, time_steps, out, timing)
    for p in PASSES:
        if p.smoke or not budget.smoke:
            with clock(p.name):
                p.run(context)


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
        flops.count_step_flops(w)
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
    case: Case,
    budget: Budget,
    time_steps: TimeSteps,
    launcher: Launcher | None = None,
    timing: groups.MemberTiming | None = None,
) -> dict[str, Any]:
    """Measure ``case`` and return its record (see :mod:`bench_lib.record`), with ``launcher``
    (by default :func:`~bench_lib.measuring.launcher.launcher_for` the case: in this process,
    or on torch.distributed workers for a parallel case).

    ``timing`` is what the case's decision group gave it (:func:`.group.time_members`: its
    verdict, its values from the group's rounds, its ratios to the other members); without it,
    the case is timed in a group of its own with its baseline.

    Raises only :class:`~bench_lib.devices.DeviceUnavailable` (the caller skips the case);
    every other failure is recorded in ``status`` / ``status_message``.
    """
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out.update(_case_fields(case))
    out.update(status="ok", flops_uncounted_ops=[], ratio_samples=[])
    clock = _PassClock(out)
    run: CaseRun | None = None

    def start(c: Case) -> CaseRun:
        return (launcher or launcher_for(c)).start(c, budget)

    try:
        if timing is None:
            timing = groups.time_members([case], budget, start)[case]
        # The group's time, shared among its members (what the cost model learns from).
        members = len(timing.summary.get("group_members") or [case])
        clock.seconds["group"] = round(float(timing.summary.get("group_seconds") or 0) / members, 6)
        if timing.error is not None:
            out.update(status="oom" if timing.oom else "error", status_message=timing.error)
        v = timing.verdict
        if v is not None:
            out.update(
                valid=v.valid,
                verdict=v.verdict,
                verdict_detail=v.detail,
                verdict_steps=verify.CHECK_STEPS,
                grad_rtol=verify.tolerance(case),
                block_flow=None if v.block_flow is None else list(v.block_flow),
                frozen_drift_per_step=v.drift_per_step,
            )
            if v.verdict == "error":
                # The mechanism cannot run a step at all: nothing else can be measured.
                under = f" under {case.parallel}" if case.is_parallel else ""
                out.update(
                    status="error", status_message=f"the mechanism raised{under}: {v.detail}"
                )
        if out["status"] != "ok":
            return make_record(out)
        with effects.case_scope(case):  # e.g. dynamo reset before and after a compiled case
            with clock("launch"):
                run = start(case)
            _measure(run, budget, time_steps, out, clock, timing)
    except DeviceUnavailable:
        raise
    except Exception as e:
        message = effects.failure_message(case, e) or f"{type(e).__name__}: {e}".splitlines()[0]
        out.update(status="oom" if is_oom(e) else "error", status_message=message[:500])
    finally:
        if run is not None:
            with clock("stop"):  # the record's pass_seconds is this very dict
                run.close()
        del run
        release(settle=True)
    return make_record(out)
