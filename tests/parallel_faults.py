"""A model factory for the parallel tests (given to cases as a file path): a two-block MLP whose
forward, on rank 1 of a process group, misbehaves from its fourth call on, as ``seq_len`` (a
size this model has no use for, passed to factories from ``Case.extra``) says: 0 nothing, 1
raise a RuntimeError, 2 hang (sleep for an hour). Each model instance counts its own calls, so
the validity check (three steps on its own model) passes and the fault strikes in the timed
steps, after the two calibration steps. (Workers are forked from a fork server, so a setting in
the test's environment would not reach them: the case carries it.)"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

NONE, RAISE, HANG = 0, 1, 2


class Faulty(nn.Module):
    def __init__(self, width: int, fault: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(2)
        )
        self.head = nn.Linear(width, 10)
        self.fault = fault
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        dist = torch.distributed
        if self.fault and dist.is_initialized() and dist.get_rank() == 1 and self.calls > 3:
            if self.fault == RAISE:
                raise RuntimeError("injected fault on rank 1")
            if self.fault == HANG:
                time.sleep(3600)
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(x)
        return out


def build(width: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    def make_batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn((batch_size, width), generator=gen)
        return x, torch.randint(0, 10, (batch_size,), generator=gen)

    return {
        "model": Faulty(width, seq_len),
        "blocks": ["blocks.0", "blocks.1"],
        "make_batch": make_batch,
    }
