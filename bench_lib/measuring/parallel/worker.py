"""What a worker process runs: join the process group, then serve the coordinator's commands.

:func:`serve` is the function torch's launcher starts on every rank
(``torch.multiprocessing.start_processes(serve, args, nprocs=world)``; it is called with the
rank first). The worker rebuilds the set-up's case from its dict (a factory given as a file
path too), joins the process group through the coordinator's TCP store on 127.0.0.1 (gloo on
CPU, nccl on CUDA with one GPU per rank), tells the coordinator it is ready, and then answers
one command at a time on its pipe, each ``(command, arg, member)``, with ``("ok", result)`` or
``("error", "rank R: Type: first line")``.

One set of workers holds any number of *members*: the cases of one set-up (every decision
group of its baseline), each opened under a number the coordinator picks (``open``), each with
its own workload, twins and watch, and dropped when its run closes (``drop``), so that a
group's members are timed in the same processes and their measurement passes reuse them.
Every other command names its member:

==================  ============================================================================
command             what the rank does (every rank at once; collectives keep them in step)
==================  ============================================================================
``open``            hold a new member: the case dict ``arg`` (nothing is built yet)
``drop``            drop the member and everything it holds
``check``           the validity check (:mod:`.check`): a verdict
``build``           build the case's workload: its BuildInfo
``step``            one training step of the case
``value``           (warm, n): warm untimed steps, then n timed between two barriers, gc off:
                    this rank's seconds per step
``watch_start``     start the case's effects' watch (:class:`~..effects.Watch`)
``watch_stop``      stop it: this rank's counts by axis (compile: frames, breaks, recompiles)
``build_baseline``  build the baseline twin (same set-up and world, nothing frozen)
``baseline_step``   one step of the twin
``flops``           FLOPs of a step of the case and of the twin; then drop the twin
``build_axis_twin`` build the axis twin (a case dict: step axes off): its calibration steps
``axis_twin_step``  one step of the axis twin
``drop_axis_twin``  drop the axis twin
``phases``          phase times over N instrumented steps
``memory``          this rank's peak memory of one step
``bytes``           bytes by category
``comm``            payload bytes passed to gradient collectives in one step, DDP buckets
``stop``            leave the process group and exit
==================  ============================================================================

The commands run inside the set-up's effects' scope (:func:`~..effects.case_scope`: a compiled
case's dynamo reset and recompile limit), as a decision group's do in the pytest process (its
members differ only in the mechanism: one compile scope, a watch per member). The worker exits when
told to stop or when its pipe closes (the coordinator is gone); torch's launcher also has it
signalled if the coordinator dies.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import psutil
import torch
import torch.distributed as dist

from .. import adapters, devices, effects, flops, memory, phases
from ..caserun import BuildInfo, calibration_steps
from ..spec import Case
from ..training import Workload
from . import collectives
from .check import check_rank
from .strategies.ddp import Ddp
from .workload import RankWorkload, build_rank_workload, rank_device

__all__ = ["Rank", "one_line", "serve"]


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class Rank:
    """One rank's state for one case: its workload, the baseline and axis twins, the watch."""

    def __init__(self, case: Case, rank: int) -> None:
        self.case = case
        self.rank = rank
        self.device = rank_device(case.device, rank)
        self._case: RankWorkload | None = None
        self._base: Workload | None = None
        self._twin: Workload | None = None
        self._watch = effects.Watch(case)

    @property
    def w(self) -> Workload:
        assert self._case is not None, "build first"
        return self._case.workload

    def handlers(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "check": lambda _: check_rank(self.case, self.rank),
            "build": lambda _: self.build(),
            "step": lambda _: self.w.step(),
            "value": lambda arg: self.value(*arg),
            "watch_start": lambda _: self._watch.start(),
            "watch_stop": lambda _: self._watch.stop(),
            "build_baseline": lambda _: self.build_baseline(),
            "baseline_step": lambda _: self.baseline_step(),
            "flops": lambda _: self.count_flops(),
            "build_axis_twin": lambda twin: self.build_axis_twin(Case.from_dict(twin)),
            "axis_twin_step": lambda _: self.axis_twin_step(),
            "drop_axis_twin": lambda _: self.drop_axis_twin(),
            "phases": lambda reps: phases.measure_phases(self.w, reps),
            "memory": lambda _: self.memory(),
            "bytes": lambda _: memory.measure_bytes_by_category(self.w),
            "comm": lambda _: self.comm(),
        }

    def build(self) -> BuildInfo:
        gc.collect()  # what the check left
        self._case = build_rank_workload(self.case, self.rank, self.case.seed + 1)
        return BuildInfo(
            threads=torch.get_num_threads(),
            trainable_params=self._case.trainable_params,
            frozen_params=self._case.frozen_params,
            warm_steps=self.w.mechanism.warm_steps,
            calibration_steps=calibration_steps(self.w),
            adapter_params=adapters.adapter_param_count(self.w.plan),
        )

    def value(self, warm: int, steps: int) -> float:
        """Seconds per step over ``steps`` steps after ``warm`` untimed ones, timed between two
        barriers (so every rank's value includes waiting for the slowest), with gc off."""
        w = self.w
        for _ in range(warm):
            w.step()
        gc.disable()
        try:
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(steps):
                w.step()
            dist.barrier()
            return (time.perf_counter() - t0) / steps
        finally:
            gc.enable()

    def build_baseline(self) -> None:
        self._base = build_rank_workload(
            self.case.baseline(), self.rank, self.case.seed + 1
        ).workload

    def baseline_step(self) -> None:
        assert self._base is not None, "build_baseline first"
        self._base.step()

    def build_axis_twin(self, twin: Case) -> int:
        self._twin = build_rank_workload(twin, self.rank, self.case.seed + 1).workload
        return calibration_steps(self._twin)

    def axis_twin_step(self) -> None:
        assert self._twin is not None, "build_axis_twin first"
        self._twin.step()

    def drop_axis_twin(self) -> None:
        self._twin = None
        gc.collect()

    def count_flops(self) -> tuple[flops.StepFlops, int]:
        assert self._base is not None, "build_baseline first"
        base = flops.count_step_flops(self._base).total
        self._base = None
        gc.collect()
        return flops.count_step_flops(self.w), base

    def memory(self) -> dict[str, Any]:
        """This rank's peak: everything the worker holds when the step starts (it holds nothing
        but this case, its group's other members dropped before the passes: parameters,
        gradients, optimizer state, batch, the set-up's own buffers; DDP's bucket buffers, which
        only C++ holds, from the hook's count) plus the highest rise during the step."""
        w = self.w
        buckets = self._bucket_bytes()
        gc.collect()
        w.mechanism.zero_grad(w)
        rss = int(psutil.Process().memory_info().rss)
        if w.device.type == "cuda":
            torch.cuda.synchronize(w.device)
            torch.cuda.reset_peak_memory_stats(w.device)
            w.step()
            peak = int(torch.cuda.max_memory_allocated(w.device))
            reserved: int | None = int(torch.cuda.max_memory_reserved(w.device))
            method = memory.CUDA_METHOD
        else:
            live = memory.process_tensor_bytes(w.device) + buckets
            peak = live + memory.cpu_peak_allocated(w.step)
            reserved, method = None, memory.CPU_METHOD
        return dataclasses.asdict(memory.MemoryResult(peak, reserved, method, rss, 0, 0))

    def _bucket_bytes(self) -> int:
        """Bytes of DDP's bucket buffers, from the hook's count of one step (0 for FSDP)."""
        if self._case is None or not isinstance(self._case.strategy, Ddp):
            return 0
        collectives.COUNTER.reset()
        self.w.step()
        return collectives.COUNTER.bucket_bytes

    def comm(self) -> dict[str, Any]:
        collectives.COUNTER.reset()
        self.w.step()
        counted = collectives.COUNTER
        ddp = self._case is not None and isinstance(self._case.strategy, Ddp)
        return {"comm_bytes": counted.bytes, "ddp_buckets": counted.buckets if ddp else None}


def pin_core(rank: int, world: int) -> None:
    """On a machine with at least ``world`` usable cores, keep this rank (every thread of it:
    compute and the collectives' own) on a core of its own, so that ranks do not preempt each
    other's threads."""
    if os.environ.get("FREEZE_BENCH_PIN_CORES", "1") != "1" or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= world:
        os.sched_setaffinity(0, {cores[rank]})


def serve(
    rank: int,
    world: int,
    port: int,
    case_dict: dict[str, Any],
    backend: str,
    timeout_s: float,
    conns: list[Connection],
) -> None:
    """A worker's life (see the module docstring). ``conns`` holds every rank's pipe end; this
    rank keeps its own and closes the others, so that the coordinator sees a pipe close when
    its worker dies."""
    conn = conns[rank]
    for i, other in enumerate(conns):
        if i != rank:
            other.close()
    try:
        # DDP's constructor and FSDP import torch._dynamo (3 s of CPU): the fork server has it
        # imported already; otherwise it is a cost of starting, not of the first pass.
        import torch._dynamo

        case = Case.from_dict(case_dict)
        pin_core(rank, world)
        devices.flush_denormals()  # before the check's steps, as in the pytest process
        if case.device == "cuda":
            torch.cuda.set_device(rank_device(case.device, rank))
        timeout = timedelta(seconds=timeout_s)
        store = dist.TCPStore(  # type: ignore[attr-defined]
            "127.0.0.1", port, world, is_master=False, timeout=timeout
        )
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
        collectives.count_gradient_collectives()
        # Everything alive now (torch's modules: millions of objects) goes to gc's permanent
        # generation, so that collections and the census of the memory pass walk only what
        # the case creates; no tensor of the case exists yet.
        gc.collect()
        gc.freeze()
    except Exception as e:
        conn.send(("error", f"rank {rank}: {one_line(e)}"))
        return
    conn.send(("ok", os.getpid()))
    members: dict[int, Handlers] = {}
    try:
        with effects.case_scope(case):
            _answer(conn, rank, members)
    finally:
        members.clear()
        gc.collect()
        dist.destroy_process_group()


#: A member's command handlers (:meth:`Rank.handlers`).
Handlers = dict[str, Callable[[Any], Any]]


def _answer(conn: Connection, rank: int, members: dict[int, Handlers]) -> None:
    """Answer the coordinator's commands until ``stop`` or until its pipe closes. ``members``
    holds each open member's handlers (:meth:`Rank.handlers`), by its number."""
    while True:
        try:
            command, arg, member = conn.recv()
        except EOFError:  # the coordinator is gone
            return
        if command == "stop":
            conn.send(("ok", None))
            return
        try:
            if command == "open":
                members[member] = Rank(Case.from_dict(arg), rank).handlers()
                result = None
            elif command == "drop":
                members.pop(member, None)
                gc.collect()
                result = None
            else:
                result = members[member][command](arg)
        except Exception as e:
            conn.send(("error", f"rank {rank}: {one_line(e)}"))
        else:
            conn.send(("ok", result))
