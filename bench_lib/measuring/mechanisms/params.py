"""Parameter-level mechanisms (and the baseline): they act on the frozen blocks' parameters,
which parameters the optimizer gets and which leaves backward fills; the forward pass runs
untouched."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import FreezePlan, Mechanism

__all__ = ["BackwardInputs", "Baseline", "OptimizerOnly", "RequiresGrad"]


class Baseline(Mechanism):
    name = "none"
    doc = "nothing frozen: every parameter trains (the baseline)"

    def prepare(self, plan: FreezePlan) -> list[nn.Parameter]:
        return list(plan.model.parameters())


class RequiresGrad(Mechanism):
    name = "requires_grad"
    doc = "frozen parameters get requires_grad=False; only the others go to the optimizer"

    def prepare(self, plan: FreezePlan) -> list[nn.Parameter]:
        for p in plan.frozen_params():
            p.requires_grad_(False)
        return plan.trainable_params()


class OptimizerOnly(Mechanism):
    name = "optimizer_only"
    doc = (
        "everything stays trainable; only unfrozen parameters go to the optimizer "
        "(frozen ones still get gradients)"
    )


class BackwardInputs(Mechanism):
    name = "backward_inputs"
    doc = "everything stays trainable; loss.backward(inputs=trainable parameters)"

    def backward(self, loss: Tensor, trainable: Sequence[nn.Parameter]) -> None:
        loss.backward(inputs=list(trainable))


NONE, REQUIRES_GRAD, OPTIMIZER_ONLY, BACKWARD_INPUTS = (
    Baseline(),
    RequiresGrad(),
    OptimizerOnly(),
    BackwardInputs(),
)
