"""Peak memory of one training step, and bytes by category.

CUDA: the caching allocator's peak statistics (``torch.cuda.max_memory_allocated`` /
``max_memory_reserved``) around one steady-state step.

CPU: there is no caching allocator to ask, and process RSS carries everything earlier in the
process. The suite reads the profiler's allocation events instead (``profile_memory=True``):
every CPU allocation and free during the step, in time order. The peak is the bytes live when
the step starts (parameters, buffers, optimizer state, batch, gradients the mechanism keeps
after its ``zero_grad``) plus the highest running total of the step's own allocations.
Method name: ``profiler_events``.

Both methods include everything live on the device: parameters, gradients, optimizer state,
batch and the step's activations and temporaries.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
import torch
from torch import Tensor

from .training import Workload

__all__ = [
    "MemoryResult",
    "cpu_peak_allocated",
    "measure_bytes_by_category",
    "measure_peak_memory",
    "storage_bytes",
]

CUDA_METHOD = "cuda_allocator"
CPU_METHOD = "profiler_events"


@dataclass(frozen=True)
class MemoryResult:
    """Peak bytes of one step. ``peak_reserved_bytes`` is ``None`` where no allocator reserves."""

    peak_memory_bytes: int
    peak_reserved_bytes: int | None
    memory_method: str
    rss_bytes: int


def _storage_key(t: Tensor) -> tuple[int, int] | None:
    try:
        s = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
        return None
    return (s.data_ptr(), s.nbytes())


def storage_bytes(tensors: Iterable[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and aliases counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        key = _storage_key(t)
        if key is not None and key[1] > 0:
            seen[key[0]] = max(seen.get(key[0], 0), key[1])
    return sum(seen.values())


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
    tensors: list[Tensor] = [*w.model.parameters(), *w.model.buffers(), w.inputs, w.targets]
    tensors += [p.grad for p in w.model.parameters() if p.grad is not None]
    tensors += _optimizer_state(w.optimizer)
    return tensors


def _optimizer_state(opt: torch.optim.Optimizer) -> list[Tensor]:
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, Tensor)]


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def measure_peak_memory(w: Workload) -> MemoryResult:
    """Peak memory of one steady-state step of a warmed-up workload (see module docstring)."""
    gc.collect()
    if w.device.type == "cuda":
        torch.cuda.synchronize(w.device)
        torch.cuda.reset_peak_memory_stats(w.device)
        w.step()
        return MemoryResult(
            int(torch.cuda.max_memory_allocated(w.device)),
            int(torch.cuda.max_memory_reserved(w.device)),
            CUDA_METHOD,
            _rss(),
        )
    # Run the step's own zero_grad first, so that no memory older than the profiler is freed
    # inside the profiled step (the profiler cannot see such frees); the step's zero_grad then
    # finds nothing left to release. Gradients a mechanism keeps between steps stay live.
    w.mechanism.zero_grad(w)
    live = storage_bytes(_live_state(w))
    peak = live + cpu_peak_allocated(w.step)
    return MemoryResult(peak, None, CPU_METHOD, _rss())


@dataclass(frozen=True)
class ByteCounts:
    param_bytes: int
    grad_bytes: int
    optimizer_state_bytes: int
    saved_activation_bytes: int


def measure_bytes_by_category(w: Workload) -> ByteCounts:
    """Bytes of parameters, of gradients after backward, of optimizer state after a step, and of
    the tensors autograd saves for backward in the forward pass (parameters and buffers
    excluded, each storage counted once). Runs one instrumented step."""
    model_state = {
        k[0] for t in [*w.model.parameters(), *w.model.buffers()] if (k := _storage_key(t))
    }
    saved: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key is not None and key[0] not in model_state:
            saved[key[0]] = max(saved.get(key[0], 0), key[1])
        return t

    w.mechanism.zero_grad(w)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = w.forward_loss()
    w.backward(loss)
    grads = [p.grad for p in w.model.parameters() if p.grad is not None]
    grad_bytes = storage_bytes(grads)
    w.optimizer_step()
    return ByteCounts(
        param_bytes=storage_bytes(w.model.parameters()),
        grad_bytes=grad_bytes,
        optimizer_state_bytes=storage_bytes(_optimizer_state(w.optimizer)),
        saved_activation_bytes=sum(saved.values()),
    )
