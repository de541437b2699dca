"""The payload bytes a rank passes to gradient collectives, counted from the calls themselves.

* DDP all-reduces its gradient buckets through a communication hook:
  :func:`counting_allreduce_hook` counts the bucket and hands it to torch's own
  ``allreduce_hook`` (``torch.distributed.algorithms.ddp_comm_hooks.default_hooks``), whose
  all-reduce is counted like any other. Every DDP case (its baseline too) runs with this hook,
  so a Python call per bucket is part of every DDP step measured.
* FSDP1 and FSDP2 call ``torch.distributed.reduce_scatter_single`` (or ``reduce_scatter_tensor``)
  for gradients, and ``all_reduce`` where they replicate.

:func:`count_gradient_collectives` wraps those functions of ``torch.distributed`` in the worker
process (it is ours, and lives for one case), so that each call adds the bytes of its input to
:data:`COUNTER`: for a reduce-scatter the whole unsharded (padded) gradient a rank sends in, for
an all-reduce the tensor. All-gathers of parameters (FSDP's unsharding) are not gradient
collectives and are not counted.
"""

# No ``from __future__ import annotations`` here: DDP checks the communication hook's
# annotations against the objects themselves (GradBucket, Future[Tensor]).
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch._C._distributed_c10d import GradBucket  # torch.distributed.GradBucket itself
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

__all__ = [
    "COUNTED",
    "COUNTER",
    "CommCounter",
    "count_gradient_collectives",
    "counting_allreduce_hook",
    "payload_bytes",
]

#: The functions of ``torch.distributed`` whose calls count, with the position and keyword of
#: the tensor (or list of tensors) they send.
COUNTED: dict[str, tuple[int, str]] = {
    "all_reduce": (0, "tensor"),
    "reduce_scatter_tensor": (1, "input"),
    "reduce_scatter_single": (1, "input"),
    "reduce_scatter": (1, "input_list"),
}


@dataclass
class CommCounter:
    """Gradient-collective calls and their payload bytes since the last :meth:`reset`; DDP
    buckets handed to the hook and their bytes (the reducer keeps one flat buffer per bucket)."""

    calls: int = 0
    bytes: int = 0
    buckets: int = 0
    bucket_bytes: int = 0

    def reset(self) -> None:
        self.calls = self.bytes = self.buckets = self.bucket_bytes = 0


COUNTER = CommCounter()


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def payload_bytes(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes a call of ``torch.distributed.<name>(*args, **kwargs)`` sends in (see
    :data:`COUNTED`)."""
    position, keyword = COUNTED[name]
    sent = args[position] if len(args) > position else kwargs[keyword]
    if isinstance(sent, Tensor):
        return _nbytes(sent)
    return sum(_nbytes(t) for t in sent)


def _counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def counted(*args: Any, **kwargs: Any) -> Any:
        COUNTER.calls += 1
        COUNTER.bytes += payload_bytes(name, args, kwargs)
        return fn(*args, **kwargs)

    counted.__freeze_bench_counted__ = True  # type: ignore[attr-defined]
    return counted


def count_gradient_collectives() -> None:
    """Wrap the functions of :data:`COUNTED` in ``torch.distributed`` so that every call adds
    to :data:`COUNTER` (once per process; calling it again changes nothing). For worker
    processes only: they live for one case."""
    for name in COUNTED:
        fn = getattr(dist, name, None)
        if fn is not None and not getattr(fn, "__freeze_bench_counted__", False):
            setattr(dist, name, _counting(name, fn))


def counting_allreduce_hook(state: object, bucket: GradBucket) -> torch.futures.Future[Tensor]:
    """DDP communication hook: count the bucket, then torch's own ``allreduce_hook`` (average
    over the ranks, as DDP does without a hook)."""
    COUNTER.buckets += 1
    COUNTER.bucket_bytes += _nbytes(bucket.buffer())
    return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]
