"""Phase times of a training step: forward (with the loss), backward, optimizer step.

A separate instrumented pass, never the timed loop: the synchronizations between phases cost
time of their own. On CUDA the phases are bracketed with CUDA events and read after one
synchronize per step; on CPU with the host clock (ops run synchronously there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import stats
from .training import Workload

__all__ = ["PhaseTimes", "measure_phases"]


@dataclass(frozen=True)
class PhaseTimes:
    """Median seconds of each phase over ``reps`` steps."""

    forward_s: float
    backward_s: float
    optimizer_s: float
    phase_reps: int


def measure_phases(w: Workload, reps: int) -> PhaseTimes:
    """Run ``reps`` instrumented steps of ``w`` (``zero_grad`` is in no phase)."""
    samples: list[tuple[float, float, float]] = []
    cuda = w.device.type == "cuda"
    for _ in range(reps):
        w.mechanism.zero_grad(w)
        if cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            ev[0].record()
            loss = w.forward_loss()
            ev[1].record()
            w.backward(loss)
            ev[2].record()
            w.optimizer_step()
            ev[3].record()
            torch.cuda.synchronize(w.device)
            samples.append(tuple(ev[i].elapsed_time(ev[i + 1]) / 1e3 for i in range(3)))  # type: ignore[arg-type]
        else:
            t0 = stats.Clock.now()
            loss = w.forward_loss()
            t1 = stats.Clock.now()
            w.backward(loss)
            t2 = stats.Clock.now()
            w.optimizer_step()
            t3 = stats.Clock.now()
            samples.append((t1 - t0, t2 - t1, t3 - t2))
    fwd, bwd, opt = (stats.median(c) for c in zip(*samples, strict=True))
    return PhaseTimes(fwd, bwd, opt, phase_reps=reps)
