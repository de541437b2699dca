"""Frozen-layer patterns (which blocks) and freeze mechanisms (how).

Patterns map a name and a depth to block indices. Mechanisms are small objects behind one
interface, in a registry keyed by name: each decides which parameters the optimizer gets, how
the blocks run in the forward pass, and how backward is called.

Semantics worth knowing (they are what the suite measures):

* An op is recorded in the autograd graph only if one of its inputs requires grad, so a frozen
  *prefix* with ``requires_grad=False`` records nothing, exactly like ``no_grad``; a frozen
  *middle* block with ``requires_grad=False`` still back-propagates dX and skips only dW.
* ``no_grad``/``inference_mode`` around a block that is not a prefix cuts the graph: every
  trainable block before it silently receives no gradient.
* ``optimizer_only`` computes and stores gradients for frozen parameters: full backward cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from .models import BlockModel
from .patterns import segments
from .spec import CaseError

if TYPE_CHECKING:
    from .training import Workload

__all__ = [
    "MECHANISMS",
    "Mechanism",
    "get_mechanism",
]


def frozen_parameters(model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
    return [p for i in sorted(frozen) for p in model.blocks[i].parameters()]


def trainable_parameters(model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
    """Parameters that should train: unfrozen blocks and the head, in model order."""
    frozen_ids = {id(p) for p in frozen_parameters(model, frozen)}
    return [p for p in model.parameters() if id(p) not in frozen_ids]


class Mechanism:
    """How frozen blocks are kept fixed. Subclasses override the hooks they need.

    * :meth:`prepare` runs once on a fresh model: sets flags and modes and returns the parameters
      the optimizer gets.
    * :meth:`forward` runs the blocks and the head; :meth:`frozen_context` wraps each run of
      consecutive frozen blocks and :meth:`leave_frozen` converts its output on the way out.
    * :meth:`zero_grad`, :meth:`backward` and :meth:`after_backward` frame the backward pass.

    ``warm_steps`` is how many steps must run before the mechanism is in its steady state (a
    late freeze happens only then); the validity check runs after them.
    """

    name: ClassVar[str]
    doc: ClassVar[str]
    trap: ClassVar[bool] = False
    warm_steps: ClassVar[int] = 0

    def prepare(self, model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
        return trainable_parameters(model, frozen)

    def frozen_context(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def leave_frozen(self, x: Tensor) -> Tensor:
        return x

    def forward(self, model: BlockModel, x: Tensor, frozen: frozenset[int]) -> Tensor:
        for is_frozen, idx in segments(len(model.blocks), frozen):
            if is_frozen:
                with self.frozen_context():
                    for i in idx:
                        x = model.blocks[i](x)
                x = self.leave_frozen(x)
            else:
                for i in idx:
                    x = model.blocks[i](x)
        out: Tensor = model.head(x)
        return out

    def zero_grad(self, w: Workload) -> None:
        w.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, trainable: Sequence[nn.Parameter]) -> None:
        loss.backward()

    def after_backward(self, w: Workload) -> None:
        """Runs between backward and the optimizer step."""


class Baseline(Mechanism):
    name = "none"
    doc = "nothing frozen: every parameter trains (the baseline)"

    def prepare(self, model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
        return list(model.parameters())


class NoGrad(Mechanism):
    name = "no_grad"
    doc = "frozen blocks run under torch.no_grad(); only unfrozen parameters go to the optimizer"

    def frozen_context(self) -> contextlib.AbstractContextManager[object]:
        return torch.no_grad()


class InferenceMode(Mechanism):
    name = "inference_mode"
    doc = (
        "frozen blocks run under torch.inference_mode(); their output is cloned outside it so "
        "autograd may save it"
    )

    def frozen_context(self) -> contextlib.AbstractContextManager[object]:
        return torch.inference_mode()

    def leave_frozen(self, x: Tensor) -> Tensor:
        # An inference tensor cannot be saved for backward; a clone made outside inference mode
        # is a normal tensor.
        return x.clone()


class RequiresGrad(Mechanism):
    name = "requires_grad"
    doc = "frozen parameters get requires_grad=False; only the others go to the optimizer"

    def prepare(self, model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
        for p in frozen_parameters(model, frozen):
            p.requires_grad_(False)
        return trainable_parameters(model, frozen)


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


# The traps: ways of "freezing" that people write and that are wrong in some setting. Each is a
# selectable mechanism so that the suite can show the verdict it deserves.


class ZeroedGradInOptimizer(Mechanism):
    name = "zeroed_grad_in_optimizer"
    doc = (
        "trap: every parameter stays in the optimizer and frozen gradients are zeroed after "
        "backward (weight decay and momentum still move them)"
    )
    trap = True

    def prepare(self, model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
        return list(model.parameters())

    def after_backward(self, w: Workload) -> None:
        for p in w.frozen_params:
            if p.grad is not None:
                p.grad.zero_()


class LateFreeze(Mechanism):
    name = "late_freeze"
    doc = (
        "trap: train everything for a step, then set requires_grad=False on frozen parameters "
        "while zero_grad(set_to_none=False) keeps their zero gradients (momentum moves them)"
    )
    trap = True
    warm_steps = 2

    def prepare(self, model: BlockModel, frozen: frozenset[int]) -> list[nn.Parameter]:
        return list(model.parameters())

    def zero_grad(self, w: Workload) -> None:
        if w.steps == 1:
            for p in w.frozen_params:
                p.requires_grad_(False)
        w.optimizer.zero_grad(set_to_none=False)


class InferenceModeNoCopy(InferenceMode):
    name = "inference_mode_nocopy"
    doc = (
        "trap: frozen blocks under torch.inference_mode() and their output fed to autograd "
        "as is (raises when a later op saves it for backward)"
    )
    trap = True

    def leave_frozen(self, x: Tensor) -> Tensor:
        return x


MECHANISMS: dict[str, type[Mechanism]] = {
    m.name: m
    for m in (
        Baseline,
        NoGrad,
        InferenceMode,
        RequiresGrad,
        OptimizerOnly,
        BackwardInputs,
        ZeroedGradInOptimizer,
        LateFreeze,
        InferenceModeNoCopy,
    )
}


def get_mechanism(name: str) -> Mechanism:
    """A fresh mechanism object; raises :class:`CaseError` naming the choices."""
    if name not in MECHANISMS:
        raise CaseError(f"mechanism={name!r} is not one of: {', '.join(MECHANISMS)}")
    return MECHANISMS[name]()


def set_frozen_mode(model: BlockModel, frozen: frozenset[int], mode: str) -> None:
    """Put frozen blocks in ``eval`` mode (or leave everything in ``train``)."""
    for i in frozen:
        model.blocks[i].train(mode == "train")


def iter_frozen_buffers(model: BlockModel, frozen: frozenset[int]) -> Iterator[tuple[str, Tensor]]:
    for i in sorted(frozen):
        for name, b in model.blocks[i].named_buffers():
            yield f"blocks.{i}.{name}", b
