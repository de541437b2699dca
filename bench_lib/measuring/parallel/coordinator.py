"""The coordinator's side of a parallel case: :class:`TorchLauncher`, its :class:`Workers` and
the :class:`TorchRun` of each case on them.

The pytest process is the coordinator. For one set of workers (a case's own, or, with
``TorchLauncher(shared=True)``, those of one set-up: every member of its decision groups is
opened on them, timed there beside the others, and measured pass by pass there) it

1. opens a ``torch.distributed.TCPStore`` on 127.0.0.1, on a port the OS picks (port 0): the
   rendezvous of the process group, held here so that no other process can take the port
   between choosing and binding it;
2. starts ``world`` workers with torch's own launcher,
   ``torch.multiprocessing.start_processes(worker.serve, ..., start_method="forkserver")``, each
   with a pipe to this process; they join the process group (gloo on CPU, nccl on CUDA with one
   GPU per rank), rebuild the case from its dict and report ready. The workers are forked from
   multiprocessing's fork server, not from this process (whose threads and state they must not
   inherit): a clean interpreter that the first parallel case starts with :data:`PRELOAD`
   imported (torch, and ``torch._dynamo``, which DDP and FSDP import when they are built: 5 s of
   CPU per worker otherwise), which ends with this process, never runs a case and holds no
   port. Each set of workers is new processes;
3. drives every pass and every step of each member (a member is a number the workers hold its
   case under: ``open`` builds nothing, ``drop`` frees everything it built): a value is timed
   on the ranks between two barriers, any other command returns when all ranks have answered;
4. on success and on failure alike (:meth:`Workers.close`: a case's own when its run closes,
   shared ones when the next set-up starts or the session ends), asks the workers to stop, waits
   :data:`STOP_GRACE_S`, then sends SIGTERM and, after :data:`KILL_GRACE_S`, SIGKILL to those
   still alive (by the pids it started, nothing else), reaps them, and closes the pipes and the
   store: no process and no listening port of the case (or of the set-up) is left.

A worker that raises, crashes (its pipe closes, or its process exits) or hangs fails the case:
:class:`WorkerError` with the worker's first line (``rank 1: RuntimeError: ...``, or ``rank 1
(pid N) killed by SIGKILL during 'step'``), which the runner records as ``status='error'``; the
sweep goes on. A hang is detected at a deadline: the workers get :data:`START_S` (90 s) to start
and report ready, and the case then gets :func:`case_timeout_s` for all its passes: 20 times the
cost model's estimate of the whole case, at least 60 s. The process group gets both together as
its timeout, so that a worker stuck in a collective gives up too. A command that fails on every
rank alike (each answers with its error within :data:`STOP_GRACE_S`) fails only its member: the
workers are still in step and serve the others; otherwise they are *broken*, every member on
them fails, and a shared launcher starts new ones for the next case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import pickle
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import start_processes

from ..budget import Budget
from ..caserun import CALIBRATION_STEPS, BuildInfo, CaseRun, Launcher, time_first_steps
from ..devices import DeviceUnavailable, cuda_unavailable_reason
from ..estimate import DEFAULT_MODELS
from ..flops import StepFlops
from ..memory import ByteCounts
from ..phases import PhaseTimes
from ..spec import Case
from ..verify import Verdict
from . import worker
from .workload import backend_for

__all__ = [
    "KILL_GRACE_S",
    "PRELOAD",
    "START_METHOD",
    "START_S",
    "STOP_GRACE_S",
    "TorchLauncher",
    "TorchRun",
    "WorkerError",
    "Workers",
    "case_timeout_s",
]

#: How the workers start (see the module docstring), and what the fork server imports first.
START_METHOD = "forkserver"
PRELOAD = ["torch", "torch._dynamo", "torch.distributed.fsdp", worker.__name__]

#: Seconds the workers get to start (a fresh interpreter importing torch, the rendezvous, on a
#: busy machine) and report ready.
START_S = 90.0
#: Then the case's passes get this many times the cost model's estimate of the case ...
WORK_FACTOR = 20.0
#: ... and at least this many seconds.
MIN_WORK_S = 60.0
#: Seconds the workers get to leave after ``stop`` before SIGTERM, then before SIGKILL.
STOP_GRACE_S = 5.0
KILL_GRACE_S = 2.0


class WorkerError(RuntimeError):
    """A worker raised, crashed or hung; the message is one line naming the rank."""


def case_timeout_s(case: Case, budget: Budget) -> float:
    """Seconds the case's passes get once its workers are ready: :data:`WORK_FACTOR` times the
    estimated seconds of the case, at least :data:`MIN_WORK_S`."""
    model = DEFAULT_MODELS.get(case.device, DEFAULT_MODELS["cpu"])
    return max(MIN_WORK_S, WORK_FACTOR * model.seconds(case, budget))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class Workers:
    """``case.world`` worker processes in one process group (see the module docstring), holding
    any number of members (:class:`TorchRun`). Construction launches them and waits until all
    are in the process group; a failure to start closes everything before raising."""

    def __init__(self, case: Case, timeout_s: float, start_s: float = START_S) -> None:
        self.case = case
        self.timeout_s = timeout_s
        self.start_s = start_s
        self._deadline = time.monotonic() + start_s
        self._conns: list[Connection] = []
        self._context: Any = None
        self._store: Any = None
        self._port = 0
        self._members = itertools.count(1)
        self.broken: str | None = None
        self.closed = False
        try:
            self._launch()
        except BaseException:
            self.close()
            raise

    def _launch(self) -> None:
        case = self.case
        if case.device == "cuda":
            reason = cuda_unavailable_reason()
            if reason:
                raise DeviceUnavailable(reason)
            if torch.cuda.device_count() < case.world:
                raise DeviceUnavailable(
                    f"world {case.world} on CUDA needs {case.world} GPUs (one process per "
                    f"device); this machine has {torch.cuda.device_count()}"
                )
        timeout = timedelta(seconds=self.start_s + self.timeout_s)
        self._store = dist.TCPStore(  # type: ignore[attr-defined]
            "127.0.0.1", 0, None, is_master=True, timeout=timeout, wait_for_workers=False
        )
        self._port = int(self._store.port)
        context = multiprocessing.get_context(START_METHOD)
        context.set_forkserver_preload(PRELOAD)  # used when the fork server starts
        pipes = [context.Pipe() for _ in range(case.world)]
        self._conns = [mine for mine, _ in pipes]
        theirs = [other for _, other in pipes]
        try:
            self._context = start_processes(
                worker.serve,
                args=(
                    case.world,
                    self.port,
                    case.to_dict(),
                    backend_for(case.device),
                    self.start_s + self.timeout_s,
                    theirs,
                ),
                nprocs=case.world,
                join=False,
                daemon=False,
                start_method=START_METHOD,
            )
        finally:
            for end in theirs:  # the workers hold theirs now; a dead worker's pipe then closes
                end.close()
        self._gather("start")
        self._deadline = time.monotonic() + self.timeout_s

    @property
    def port(self) -> int:
        """The TCP port of the rendezvous store on 127.0.0.1 (closed with the workers)."""
        return self._port

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, rank order (empty before they started)."""
        return [] if self._context is None else list(self._context.pids())

    @property
    def usable(self) -> bool:
        """Whether the workers can take more commands (not closed, not broken)."""
        return not (self.closed or self.broken)

    def extend(self, timeout_s: float) -> None:
        """Give the commands from now on ``timeout_s`` more (a new member's passes)."""
        self._deadline = max(self._deadline, time.monotonic() + timeout_s)

    def new_member(self) -> int:
        """A number no member of these workers had."""
        return next(self._members)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        processes = [] if self._context is None else list(self._context.processes)
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", None, None))
        end = time.monotonic() + STOP_GRACE_S
        for p in processes:
            p.join(max(0.0, end - time.monotonic()))
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join(KILL_GRACE_S)
            if p.is_alive():
                p.kill()
                p.join()
        for conn in self._conns:
            conn.close()
        if self._context is not None:
            for path in self._context.error_files:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._store = None  # closes the rendezvous port

    # ------------------------------------------------------------------------ talking to them

    def _death(self, rank: int, command: str) -> str:
        """Why worker ``rank`` is gone, in one line."""
        p = self._context.processes[rank]
        p.join(KILL_GRACE_S)
        path = self._context.error_files[rank]
        how = f"exited with code {p.exitcode}"
        if os.path.exists(path):  # torch's launcher wrote the traceback of an escaped exception
            with open(path, "rb") as fh, contextlib.suppress(Exception):
                how = f"raised {_last_line(pickle.load(fh))}"
        elif p.exitcode is not None and p.exitcode < 0:
            how = f"killed by {signal.Signals(-p.exitcode).name}"
        return f"rank {rank} (pid {p.pid}) {how} during {command!r}"

    def _fail(self, why: str) -> WorkerError:
        self.broken = why
        return WorkerError(why)

    def _gather(self, command: str, first: Callable[[Any], bool] | None = None) -> list[Any]:
        """Every rank's answer to ``command``, in rank order (or the first answer ``first``
        accepts). Raises :class:`WorkerError` when a rank answers with an error, dies, or does
        not answer before the deadline. After an error (or an answer ``first`` accepts) the
        other ranks get :data:`STOP_GRACE_S` to answer too: when they all do, the workers are
        still in step and go on serving their other members; otherwise they are broken."""
        processes = self._context.processes
        sentinels = {p.sentinel: rank for rank, p in enumerate(processes)}
        pending = dict(enumerate(self._conns))
        replies: list[Any] = [None] * len(self._conns)
        early: tuple[str | None, Any] | None = None  # (error, accepted answer)
        grace_end = 0.0
        while pending:
            remaining = self._deadline - time.monotonic()
            if early is not None:
                remaining = min(remaining, grace_end - time.monotonic())
            if remaining <= 0:
                if early is not None:
                    break
                limit = self.start_s if command == "start" else self.timeout_s
                raise self._fail(
                    f"rank {min(pending)} did not answer {command!r} within the case's "
                    f"{limit:.0f} s (the worker hangs)"
                )
            ready = wait([*pending.values(), *sentinels], timeout=remaining)
            for rank, conn in list(pending.items()):
                if conn not in ready:
                    continue
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError):
                    raise self._fail(self._death(rank, command)) from None
                del pending[rank]
                replies[rank] = payload
                if early is None and (status != "ok" or (first is not None and first(payload))):
                    early = (str(payload), None) if status != "ok" else (None, payload)
                    grace_end = time.monotonic() + STOP_GRACE_S
            for obj in ready:
                if obj in sentinels and sentinels[obj] in pending:
                    death = self._death(sentinels[obj], command)
                    # After a rank's error, that error is the cause; the death its consequence.
                    raise self._fail(early[0] or death if early is not None else death)
        if early is None:
            return replies
        error, accepted = early
        if pending:
            self.broken = error or "an earlier command returned before every rank answered"
        if error is not None:
            raise WorkerError(error)
        return [accepted]

    def call(
        self,
        command: str,
        arg: Any = None,
        member: int | None = None,
        first: Callable[[Any], bool] | None = None,
    ) -> list[Any]:
        """Send ``command`` (for ``member``) to every rank and gather the answers (see
        :meth:`_gather`)."""
        if not self.usable:
            raise WorkerError(f"the case's workers cannot go on: {self.broken or 'closed'}")
        for rank, conn in enumerate(self._conns):
            try:
                conn.send((command, arg, member))
            except OSError:
                raise self._fail(self._death(rank, command)) from None
        return self._gather(command, first)


class TorchRun(CaseRun):
    """A parallel case on ``case.world`` workers (see the module docstring): on ``workers``
    shared with the other members of its decision group, or on workers of its own, launched
    here (a failure to start closes everything before raising) and stopped by :meth:`close`."""

    def __init__(
        self,
        case: Case,
        timeout_s: float,
        start_s: float = START_S,
        workers: Workers | None = None,
    ) -> None:
        self.case = case
        self._own = workers is None
        self.workers = Workers(case, timeout_s, start_s) if workers is None else workers
        self._member = self.workers.new_member()
        self._calibration_steps = CALIBRATION_STEPS
        self._closed = False
        try:
            self._call("open", case.to_dict())
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int:
        """The TCP port of the workers' rendezvous store on 127.0.0.1."""
        return self.workers.port

    @property
    def pids(self) -> list[int]:
        """The workers' process ids, rank order."""
        return self.workers.pids

    def close(self) -> None:
        """Drop the member from its workers (and stop them when they are its own)."""
        if self._closed:
            return
        self._closed = True
        if self._own:
            self.workers.close()
        elif self.workers.usable:
            with contextlib.suppress(WorkerError):
                self.workers.call("drop", None, self._member)

    def _call(
        self, command: str, arg: Any = None, first: Callable[[Any], bool] | None = None
    ) -> list[Any]:
        """Send ``command`` to every rank and gather the answers (see :meth:`Workers._gather`)."""
        if self._closed:
            raise WorkerError("the case's workers cannot go on: closed")
        return self.workers.call(command, arg, self._member, first)

    # ------------------------------------------------------------------------------- passes

    def check(self) -> Verdict:
        # A rank that finds the set-up refusing answers at once; the others may be waiting in
        # a collective for it, and are stopped with the case.
        verdict: Verdict = self._call("check", first=lambda v: v.verdict == "error")[0]
        return verdict

    def build(self) -> BuildInfo:
        info: BuildInfo = self._call("build")[0]
        self._calibration_steps = info.calibration_steps
        return info

    def _step(self) -> None:
        self._call("step")

    def _baseline_step(self) -> None:
        self._call("baseline_step")

    def calibrate(self) -> float:
        step_s, self.compile_s = time_first_steps(self._step, self._calibration_steps)
        return step_s

    def value(self, warm: int, steps: int) -> float:
        # Timed on the ranks between two barriers (the slowest rank's time is the step's):
        # the pipe's round trips and the coordinator's wake-ups stay out of the value.
        seconds: list[float] = self._call("value", (warm, steps))
        return max(seconds)

    def start_watch(self) -> None:
        self._call("watch_start")

    def stop_watch(self) -> list[dict[str, dict[str, Any]]]:
        # Every rank's counts: the effects' watch_record says what the record keeps of them.
        counts: list[dict[str, dict[str, Any]]] = self._call("watch_stop")
        return counts

    def _axis_twin_step(self) -> None:
        self._call("axis_twin_step")

    def build_axis_twin(self, twin: Case) -> Callable[[], None]:
        steps: int = self._call("build_axis_twin", twin.to_dict())[0]  # its calibration steps
        for _ in range(steps):
            self._axis_twin_step()
        return self._axis_twin_step

    def drop_axis_twin(self) -> None:
        self._call("drop_axis_twin")

    @property
    def step(self) -> Callable[[], None]:
        return self._step

    def build_baseline(self) -> None:
        self._call("build_baseline")
        for _ in range(CALIBRATION_STEPS):
            self._baseline_step()

    @property
    def baseline_step(self) -> Callable[[], None]:
        return self._baseline_step

    def flops(self) -> tuple[StepFlops, int]:
        flops, base = self._call("flops")[0]  # rank 0's: every rank runs the same work
        return flops, base

    def phases(self, reps: int) -> PhaseTimes:
        times: list[PhaseTimes] = self._call("phases", reps)
        return PhaseTimes(
            forward_s=max(t.forward_s for t in times),
            backward_s=max(t.backward_s for t in times),
            optimizer_s=max(t.optimizer_s for t in times),
            phase_reps=reps,
        )

    def memory(self) -> dict[str, Any]:
        ranks: list[dict[str, Any]] = self._call("memory")
        busiest = dict(max(ranks, key=lambda r: r["peak_memory_bytes"]))
        busiest["rss_bytes"] = max(r["rss_bytes"] for r in ranks)
        busiest["rank_peak_memory_bytes"] = [r["peak_memory_bytes"] for r in ranks]
        return busiest

    def bytes_by_category(self) -> ByteCounts:
        counts: list[ByteCounts] = self._call("bytes")
        return ByteCounts(
            *(max(getattr(c, f.name) for c in counts) for f in dataclasses.fields(ByteCounts))
        )

    def comm(self) -> dict[str, Any]:
        ranks: list[dict[str, Any]] = self._call("comm")
        return {
            "comm_bytes": max(r["comm_bytes"] for r in ranks),
            "ddp_buckets": ranks[0]["ddp_buckets"],
        }


class TorchLauncher(Launcher):
    """Starts a parallel case on torch.distributed workers (a :class:`TorchRun`).
    ``timeout_s`` replaces :func:`case_timeout_s` (tests use a short one).

    With ``shared``, the cases of one set-up (every decision group of its baseline, and each
    member's measurement passes) are members of one set of workers: launched for the set-up's
    first case, kept while its cases follow, and stopped when a case of another set-up starts,
    when they break, or at :meth:`close` (each member's run drops what it built when it closes,
    so a set of workers holds only the members alive). Without it, each case has workers of its
    own, stopped when its run closes."""

    name = "torch"

    def __init__(self, timeout_s: float | None = None, shared: bool = False) -> None:
        self.timeout_s = timeout_s
        self.shared = shared
        self._workers: Workers | None = None
        self._setup: Case | None = None

    def start(self, case: Case, budget: Budget) -> TorchRun:
        if not case.is_parallel:
            raise ValueError(f"{case.id} has no parallel set-up: run it in-process")
        timeout_s = self.timeout_s or case_timeout_s(case, budget)
        if not self.shared:
            return TorchRun(case, timeout_s, START_S)
        setup = case.baseline()
        workers = self._workers
        if workers is None or setup != self._setup or not workers.usable:
            self.close()
            workers = Workers(setup, timeout_s, START_S)
            self._workers, self._setup = workers, setup
        else:
            workers.extend(timeout_s)
        return TorchRun(case, timeout_s, START_S, workers=workers)

    @property
    def workers(self) -> Workers | None:
        """The shared workers alive now (``None`` when none are)."""
        return self._workers

    def close(self) -> None:
        """Stop the shared workers (nothing when there are none)."""
        if self._workers is not None:
            self._workers.close()
        self._workers = self._setup = None
