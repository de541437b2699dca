"""Peak memory of one training step, what else is alive, and bytes by category.

A case's peak is its workload's live state when a steady-state step starts (parameters,
buffers, optimizer state, batch, gradients the mechanism keeps after its ``zero_grad``) plus the
highest rise above that during the step. Nothing else alive on the device counts: what is alive
at the start that is neither the workload's nor the libraries' workspace is recorded apart as
``foreign_bytes`` and must be 0 (a case that leaks would show here, in the next case).

CUDA (``cuda_allocator``): the rise is ``max_memory_allocated() - memory_allocated()`` around
the step, after ``reset_peak_memory_stats()``; the live state is counted in the caching
allocator's rounding (512-byte blocks). ``workspace_bytes`` (cuBLAS/cuBLASLt, cuDNN) is what
stays allocated after the process warm-up when nothing of ours is alive, measured once.

CPU (``profiler_events``): there is no caching allocator to ask, and process RSS carries
everything earlier in the process. The rise comes from the profiler's allocation events
(``profile_memory=True``): every CPU allocation and free during the step, in time order.
``foreign_bytes`` is the storages of every CPU tensor that Python's gc can reach minus the
workload's: a lower bound, since gc cannot see tensors that only C++ holds (an autograd graph
kept alive by a reference cycle through its nodes, for instance).
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

from .effects.amp import AMP_DTYPES
from .training import Workload

__all__ = [
    "CPU_FOREIGN_SLACK_BYTES",
    "CUDA_BLOCK_BYTES",
    "Allocator",
    "MemoryResult",
    "cpu_peak_allocated",
    "cuda_peak",
    "cuda_rounded",
    "foreign_cpu_bytes",
    "local_tensor",
    "measure_bytes_by_category",
    "measure_peak_memory",
    "measure_workspace",
    "process_tensor_bytes",
    "reachable_tensor_bytes",
    "storage_bytes",
    "workspace_bytes",
]

CUDA_METHOD = "cuda_allocator"
CPU_METHOD = "profiler_events"
#: The CUDA caching allocator hands out multiples of 512 bytes (``kMinBlockSize``).
CUDA_BLOCK_BYTES = 512
#: ``foreign_bytes`` on CPU below this is noise of the gc census, not a leak.
CPU_FOREIGN_SLACK_BYTES = 64 * 1024


class Allocator:
    """The CUDA allocator seam: tests replace these with fakes that return injected numbers."""

    memory_allocated: Callable[[torch.device], int] = staticmethod(torch.cuda.memory_allocated)
    max_memory_allocated: Callable[[torch.device], int] = staticmethod(
        torch.cuda.max_memory_allocated
    )
    max_memory_reserved: Callable[[torch.device], int] = staticmethod(
        torch.cuda.max_memory_reserved
    )
    reset_peak_memory_stats: Callable[[torch.device], None] = staticmethod(
        torch.cuda.reset_peak_memory_stats
    )
    synchronize: Callable[[torch.device], None] = staticmethod(torch.cuda.synchronize)


#: Workspace bytes per device (``"cuda:0"``), measured once by :func:`measure_workspace`.
_WORKSPACE: dict[str, int] = {}


def cuda_rounded(nbytes: int) -> int:
    """``nbytes`` as the CUDA caching allocator counts it (at least one 512-byte block)."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES


def measure_workspace(device: torch.device) -> int:
    """Bytes that stay allocated on ``device`` when nothing of the suite is alive (library
    workspaces kept by the caching allocator for good). Call it after the process warm-up with
    everything released; the value is kept for the records. Always 0 on CPU."""
    value = 0
    if device.type == "cuda":
        gc.collect()
        Allocator.synchronize(device)
        value = int(Allocator.memory_allocated(device))
    _WORKSPACE[str(device)] = value
    return value


def workspace_bytes(device: torch.device) -> int:
    """The workspace measured for ``device`` (0 if it was never measured)."""
    return _WORKSPACE.get(str(device), 0)


@dataclass(frozen=True)
class MemoryResult:
    """Peak bytes of one step. ``peak_reserved_bytes`` is ``None`` where no allocator reserves."""

    peak_memory_bytes: int
    peak_reserved_bytes: int | None
    memory_method: str
    rss_bytes: int
    foreign_bytes: int
    workspace_bytes: int


def local_tensor(t: Tensor) -> Tensor:
    """What this process stores of ``t``: a DTensor's local shard (FSDP2's parameters, their
    gradients and optimizer state), any other tensor as it is."""
    dtensor = sys.modules.get("torch.distributed.tensor")  # no DTensor exists before its import
    if dtensor is not None and isinstance(t, dtensor.DTensor):
        with torch.no_grad():
            local: Tensor = t.to_local()
        return local
    return t


def _storage_key(t: Tensor) -> tuple[int, int] | None:
    if getattr(t, "fake_mode", None) is not None:
        return None  # torch.compile's fake tensors (gc sees them while it compiles): no memory
    t = local_tensor(t)
    try:
        s = t.untyped_storage()
        return (s.data_ptr(), s.nbytes())
    except (RuntimeError, NotImplementedError):  # no storage (meta, sparse, functional)
        return None


def _storages(tensors: Iterable[Tensor]) -> dict[int, int]:
    """Distinct storages behind ``tensors``: data pointer -> bytes (views counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key is not None and key[1] > 0:
            seen[key[0]] = max(seen.get(key[0], 0), key[1])
    return seen


def storage_bytes(tensors: Iterable[Tensor], *, cuda_rounding: bool = False) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and aliases counted once), each
    rounded as the CUDA caching allocator rounds it when ``cuda_rounding``."""
    sizes = _storages(tensors).values()
    return sum(cuda_rounded(n) for n in sizes) if cuda_rounding else sum(sizes)


def _reachable_tensors(device: torch.device) -> list[Tensor]:
    """Every tensor on ``device``'s type that Python's gc tracks (parameters included)."""
    found: list[Tensor] = []
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads ``__class__``, which some lazily deprecated
        # module attributes turn into a warning.
        if issubclass(type(obj), Tensor):
            try:
                if obj.device.type == device.type and not obj.is_meta:
                    found.append(obj)
            except RuntimeError:  # tensor subclasses without a device
                continue
    return found


def process_tensor_bytes(device: torch.device) -> int:
    """Bytes of the distinct storages of every tensor on ``device``'s type that gc can reach in
    this process, after a collection: the live state of a worker process, which holds nothing
    but its case."""
    gc.collect()
    return reachable_tensor_bytes(device)


def reachable_tensor_bytes(device: torch.device) -> int:
    """:func:`process_tensor_bytes` without its collection (the caller has just collected)."""
    return storage_bytes(_reachable_tensors(device))


def foreign_cpu_bytes(own: Iterable[Tensor]) -> int:
    """Bytes of the CPU storages gc can reach that are not behind ``own`` (a lower bound of
    what else is alive: tensors that only C++ holds are invisible to gc)."""
    gc.collect()
    mine = set(_storages(own))
    everything = _storages(_reachable_tensors(torch.device("cpu")))
    return sum(n for ptr, n in everything.items() if ptr not in mine)


def cpu_peak_allocated(fn: Callable[[], object]) -> int:
    """Highest running total of CPU bytes that ``fn`` allocates, from the profiler's events.

    Frees of memory allocated before the call are not reported by the profiler, so the result
    is the peak of what ``fn`` itself holds at once, not counting what it releases of older
    memory.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        e
        for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU  # type: ignore[attr-defined]
    ]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for e in events:
        running += e.nbytes()
        peak = max(peak, running)
    return peak


def _live_state(w: Workload) -> list[Tensor]:
    """The workload's own tensors on its device: parameters, buffers, batch, gradients, optimizer
    state (AdamW's ``step`` counters live on the CPU even for a CUDA model)."""
    batch = [t for t in tree_leaves((w.inputs, w.targets)) if isinstance(t, Tensor)]
    tensors: list[Tensor] = [*w.model.parameters(), *w.model.buffers(), *batch]
    tensors += [p.grad for p in w.model.parameters() if p.grad is not None]
    tensors += _optimizer_state(w.optimizer)
    return [t for t in tensors if t.device.type == w.device.type]


def _optimizer_state(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, Tensor)]


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def cuda_peak(
    live: int, allocated_at_start: int, max_allocated: int, workspace: int
) -> tuple[int, int]:
    """``(peak, foreign)`` of a CUDA step from the allocator's numbers (bytes, 512-rounded).

    ``live``: the workload's live state at the start of the step; ``allocated_at_start``:
    ``memory_allocated()`` then; ``max_allocated``: ``max_memory_allocated()`` after the step,
    with the peak statistics reset at its start; ``workspace``: the libraries' workspace.
    """
    rise = max(0, max_allocated - allocated_at_start)
    foreign = max(0, allocated_at_start - live - workspace)
    return live + rise, foreign


def measure_peak_memory(w: Workload) -> MemoryResult:
    """Peak memory of one steady-state step of a warmed-up workload (see module docstring)."""
    gc.collect()
    # Run the step's own zero_grad first, so that no memory older than the measurement is freed
    # inside the measured step (the profiler cannot see such frees, and a free would lower the
    # CUDA start line); the step's zero_grad then finds nothing left to release. Gradients a
    # mechanism keeps between steps stay live and count.
    w.mechanism.zero_grad(w)
    workspace = workspace_bytes(w.device)
    if w.device.type == "cuda":
        Allocator.synchronize(w.device)
        live = storage_bytes(_live_state(w), cuda_rounding=True)
        start = int(Allocator.memory_allocated(w.device))
        Allocator.reset_peak_memory_stats(w.device)
        w.step()
        peak, foreign = cuda_peak(
            live, start, int(Allocator.max_memory_allocated(w.device)), workspace
        )
        reserved = int(Allocator.max_memory_reserved(w.device))
        return MemoryResult(peak, reserved, CUDA_METHOD, _rss(), foreign, workspace)
    state = _live_state(w)
    live = storage_bytes(state)
    foreign = foreign_cpu_bytes(state)
    del state
    peak = live + cpu_peak_allocated(w.step)
    return MemoryResult(peak, None, CPU_METHOD, _rss(), foreign, workspace)


@dataclass(frozen=True)
class ByteCounts:
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    saved_activation_bytes: int
    autocast_weight_bytes: int


def _full(params: Iterable[Tensor]) -> list[Tensor]:
    """The parameters as autocast sees them in forward: an FSDP2 shard (a DTensor) gathered
    whole (a collective: every rank calls this with the same parameters in the same order)."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        return [p.full_tensor() if isinstance(p, DTensor) else p for p in params]


def _param_casts(saved: Iterable[Tensor], params: Iterable[Tensor], dtype: torch.dtype) -> set[int]:
    """Storages (by data pointer) among ``saved`` that hold a parameter cast to ``dtype``: the
    copies autocast makes of weights (cached for trainable ones, made anew for frozen ones).
    Identified by content, whatever their layout: a storage of ``dtype`` holding exactly a
    parameter's elements cast to ``dtype`` (the cast itself in eager mode, a transposed copy
    that compiled code may keep)."""
    by_size: dict[int, list[Tensor]] = {}
    for p in _full(params):
        if p.is_floating_point() and p.dtype != dtype:
            by_size.setdefault(p.numel() * dtype.itemsize, []).append(p)
    found: set[int] = set()
    with torch.no_grad():
        for t in saved:
            key = _storage_key(t)
            if t.dtype != dtype or key is None or key[0] in found or key[1] not in by_size:
                continue
            flat = t.as_strided((key[1] // dtype.itemsize,), (1,), 0)
            for p in by_size[key[1]]:
                cast = p.to(dtype).flatten()
                if torch.equal(flat, cast) or torch.equal(flat.sort().values, cast.sort().values):
                    found.add(key[0])
                    break
    return found


def measure_bytes_by_category(w: Workload) -> ByteCounts:
    """Bytes of parameters, of gradients after backward, of optimizer state after a step, and of
    the tensors autograd saved for backward in the forward pass and still holds when backward
    starts (parameters and buffers excluded, each storage counted once). Runs one instrumented
    step.

    Only saved tensors still alive at the end of the forward pass count: under a graph cut the
    part of the graph before the cut is freed as soon as nothing refers to it, so what it saved
    never reaches backward (and its freed storages' addresses may be reused by later saves,
    which made a count by address alone vary from run to run).

    Under autocast, the low-precision copies of parameters among the saved tensors are counted
    apart (``autocast_weight_bytes``), not as activations. A compiled case runs its compiled
    forward here (the hooks are entered around the call, outside the compiled code), so these
    are the tensors the compiled graph saves; under checkpointing, the inputs each checkpointed
    block keeps (saved by the checkpoint itself), not what its recomputation will make.
    """
    model_state = {
        k[0] for t in [*w.model.parameters(), *w.model.buffers()] if (k := _storage_key(t))
    }
    packed: list[weakref.ref[Tensor]] = []

    def pack(t: Tensor) -> Tensor:
        # Not ``t`` itself: a node that saves its own output (ReLU does) would then hold a strong
        # reference to a tensor whose grad_fn is that node, a cycle through autograd's C++
        # nodes that gc cannot see. Where backward never reaches a node (a graph cut), the
        # cycle would keep that part of the graph alive for good. A detached alias shares the
        # storage and has no grad_fn; it lives exactly as long as the node that saved it.
        alias = t.detach()
        packed.append(weakref.ref(alias))
        return alias

    w.mechanism.zero_grad(w)
    # Never compiled: after a graph break (FSDP2's hooks) dynamo would compile it as a frame of
    # its own, guarded on len(packed), and recompile at every call.
    pack = torch.compiler.disable(pack)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = w.forward_loss()
    alive = [t for ref in packed if (t := ref()) is not None]
    saved = {k: n for k, n in _storages(alive).items() if k not in model_state}
    dtype = AMP_DTYPES.get(w.case.amp)
    casts = _param_casts(alive, w.model.parameters(), dtype) if dtype is not None else set()
    del alive
    packed.clear()
    w.backward(loss)
    grads = [p.grad for p in w.model.parameters() if p.grad is not None]
    grad_bytes = storage_bytes(grads)
    w.optimizer_step()
    return ByteCounts(
        param_bytes=storage_bytes(w.model.parameters()),
        grad_bytes=grad_bytes,
        optimizer_state_bytes=storage_bytes(_optimizer_state(w.optimizer)),
        saved_activation_bytes=sum(n for k, n in saved.items() if k not in casts),
        autocast_weight_bytes=sum(n for k, n in saved.items() if k in casts),
    )
