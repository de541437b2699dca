"""The traps: ways of "freezing" that people write and that are wrong in some setting. Each is
a selectable mechanism so that the suite can show the verdict it deserves (the names are
:data:`bench_lib.vocab.TRAP_MECHANISMS`)."""

from __future__ import annotations

from typing import Any

from .base import StepState
from .context import InferenceMode
from .params import Baseline

__all__ = ["InferenceModeNoCopy", "LateFreeze", "ZeroedGradInOptimizer"]


# The first two keep every parameter in the optimizer, as the baseline does.


class ZeroedGradInOptimizer(Baseline):
    name = "zeroed_grad_in_optimizer"
    doc = (
        "trap: every parameter stays in the optimizer and frozen gradients are zeroed after "
        "backward (weight decay and momentum still move them)"
    )

    def after_backward(self, state: StepState) -> None:
        for p in state.frozen_params:
            if p.grad is not None:
                p.grad.zero_()


class LateFreeze(Baseline):
    name = "late_freeze"
    doc = (
        "trap: train everything for a step, then set requires_grad=False on frozen parameters "
        "while zero_grad(set_to_none=False) keeps their zero gradients (momentum moves them)"
    )
    warm_steps = 2

    def zero_grad(self, state: StepState) -> None:
        if state.steps == 1:
            for p in state.frozen_params:
                p.requires_grad_(False)
        state.optimizer.zero_grad(set_to_none=False)


class InferenceModeNoCopy(InferenceMode):
    name = "inference_mode_nocopy"
    doc = (
        "trap: frozen blocks under torch.inference_mode() and their output fed to autograd "
        "as is (raises when a later op saves it for backward)"
    )

    def leave(self, out: Any) -> Any:
        return out


ZEROED_GRAD_IN_OPTIMIZER, LATE_FREEZE, INFERENCE_MODE_NOCOPY = (
    ZeroedGradInOptimizer(),
    LateFreeze(),
    InferenceModeNoCopy(),
)
