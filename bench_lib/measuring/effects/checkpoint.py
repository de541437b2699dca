"""``checkpoint`` ``on``: every block that holds a parameter meant to train runs through
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, by a wrapper on its modules'
``forward`` (:func:`~bench_lib.measuring.mechanisms.context.wrap_forward`, installed after the
mechanism's wrappers and removed before them).

Frozen blocks are left alone: the checkpointed set is the same for every mechanism of a
pattern, and what a frozen block keeps for backward is the mechanism's doing. Under ``no_grad``,
``inference_mode`` and a frozen prefix with ``requires_grad=False`` a frozen block records no
graph, so there is nothing to checkpoint; under ``optimizer_only`` and ``backward_inputs`` it
keeps its activations, which is what those mechanisms cost. Checkpointing re-runs a block's
forward during backward, so a trainable BatchNorm updates its running statistics twice per step
(a known property of checkpointing, not of freezing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.checkpoint import checkpoint

from ..mechanisms.base import FreezePlan, Uninstall
from ..mechanisms.context import remove_all, wrap_forward
from ..spec import Case
from .base import Effect

__all__ = ["CHECKPOINT", "Checkpoint", "checkpointed_blocks"]


def checkpointed_blocks(plan: FreezePlan) -> list[int]:
    """The blocks ``checkpoint on`` wraps: those holding a parameter meant to train."""
    trainable = {id(p) for p in plan.trainable_params()}
    return [
        i
        for i in range(len(plan.blocks))
        if any(id(p) in trainable for _, m in plan.modules(i) for p in m.parameters())
    ]


def _checkpointed(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return checkpoint(call, *args, use_reentrant=False, **kwargs)


class Checkpoint(Effect):
    name = "checkpoint"
    doc = "non-reentrant activation checkpointing of every block that holds a trainable parameter"

    def install(self, case: Case, plan: FreezePlan) -> Uninstall:
        modules = [m for i in checkpointed_blocks(plan) for _, m in plan.modules(i)]
        return remove_all([wrap_forward(m, _checkpointed) for m in modules])


CHECKPOINT = Checkpoint()
