"""DistributedDataParallel: every rank holds the whole model; gradients are all-reduced in
buckets during backward (through a counting communication hook, see :mod:`..collectives`).

DDP registers only the parameters that require grad when it is built, and by default expects
every one of them to get a gradient in every backward: a frozen block run under ``no_grad``
leaves its parameters without one, and the next forward stops with "Expected to have finished
reduction in the prior iteration before starting a new one" unless ``find_unused_parameters``
(which searches the graph for unused parameters after every forward) or ``static_graph`` (which
learns them in the first iteration) is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ...families.base import Built
from .. import collectives
from .base import GradPiece, Strategy

__all__ = ["Ddp"]


class Ddp(Strategy):
    """``DistributedDataParallel(model, **flags)`` with the counting communication hook."""

    replicated = True

    def __init__(self, name: str, doc: str, **flags: Any) -> None:
        self.name = name
        self.doc = doc
        self.flags = flags

    def wrap(self, built: Built, device: torch.device) -> nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(built.model, device_ids=ids, **self.flags)
        ddp.register_comm_hook(None, collectives.counting_allreduce_hook)
        return ddp

    def optimizer_params(
        self, built: Built, wrapper: nn.Module | None, names: Set[str]
    ) -> list[nn.Parameter]:
        return [p for n, p in built.model.named_parameters() if n in names]

    def full_state(self, built: Built, wrapper: nn.Module | None) -> dict[str, Tensor]:
        # Every rank holds the whole model: its own state dict is the full one.
        return {k: v.detach() for k, v in built.model.state_dict().items()}

    def grad_pieces(
        self,
        built: Built,
        wrapper: nn.Module | None,
        reference: Mapping[str, Tensor],
        rank: int,
        world: int,
    ) -> list[GradPiece]:
        return [
            GradPiece(n, p.grad, reference[n])
            for n, p in built.model.named_parameters()
            if n in reference
        ]


DDP = Ddp("ddp", "DistributedDataParallel with its default flags")
DDP_FIND_UNUSED = Ddp(
    "ddp_find_unused",
    "DistributedDataParallel(find_unused_parameters=True): searches the autograd graph for "
    "parameters without a gradient after every forward",
    find_unused_parameters=True,
)
DDP_STATIC = Ddp(
    "ddp_static",
    "DistributedDataParallel(static_graph=True): learns the unused parameters in the first "
    "iteration and relies on the graph staying the same",
    static_graph=True,
)
