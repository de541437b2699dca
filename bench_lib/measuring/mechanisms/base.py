"""The mechanism interface, and the freeze plan it acts on.

A :class:`FreezePlan` is a model, its blocks (submodule names, from the model's family) and the
indices of the frozen ones. It answers which parameters and buffers are frozen:

* frozen parameters are every parameter of the frozen blocks' modules, by identity (a parameter
  tied to a module outside the block is frozen with the block);
* every other parameter (unfrozen blocks, heads, final norms outside every block) trains;
* frozen buffers are the frozen block modules' buffers.

A :class:`Mechanism` is how the frozen blocks are kept fixed: one stateless object per name
that acts on the plan (its parameters, or wrappers on its block modules) and frames the
backward pass. It never runs blocks itself; the model's own ``forward`` does.

Semantics worth knowing (they are what the suite measures):

* An op is recorded in the autograd graph only if one of its inputs requires grad, so a frozen
  *prefix* with ``requires_grad=False`` records nothing, exactly like ``no_grad``; a frozen
  *middle* block with ``requires_grad=False`` still back-propagates dX and skips only dW.
* ``no_grad``/``inference_mode`` around a block that is not a prefix cuts the graph: every
  trainable block before it silently receives no gradient (or only part of it, through a skip
  connection around the frozen block).
* ``optimizer_only`` computes and stores gradients for frozen parameters: full backward cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from ..spec import CaseError

__all__ = ["FreezePlan", "Mechanism", "StepState", "Uninstall"]

#: Removes what :meth:`Mechanism.install` put in place.
Uninstall = Callable[[], None]


class StepState(Protocol):
    """What the step hooks of a mechanism read of a workload."""

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    @property
    def frozen_params(self) -> list[nn.Parameter]: ...

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far."""


@dataclass(frozen=True)
class FreezePlan:
    """``model``'s ``blocks`` (submodule names each) with the ``frozen`` block indices.

    Raises :class:`CaseError` for a frozen index outside the blocks.
    """

    model: nn.Module
    blocks: tuple[tuple[str, ...], ...]
    frozen: frozenset[int]

    def __post_init__(self) -> None:
        bad = sorted(i for i in self.frozen if not 0 <= i < len(self.blocks))
        if bad:
            raise CaseError(
                f"frozen block index {bad[0]} is out of range for a model of "
                f"{len(self.blocks)} blocks (valid: 0..{len(self.blocks) - 1})"
            )

    def modules(self, block: int) -> list[tuple[str, nn.Module]]:
        """The named modules of block ``block``."""
        return [(name, self.model.get_submodule(name)) for name in self.blocks[block]]

    def frozen_modules(self) -> list[tuple[str, nn.Module]]:
        """The named modules of the frozen blocks, in block order."""
        return [m for i in sorted(self.frozen) for m in self.modules(i)]

    def frozen_params(self) -> list[nn.Parameter]:
        """The frozen blocks' parameters, each once, in block order."""
        params = {id(p): p for _, m in self.frozen_modules() for p in m.parameters()}
        return list(params.values())

    def trainable_params(self) -> list[nn.Parameter]:
        """The parameters meant to train (all the others), in model order."""
        frozen = {id(p) for p in self.frozen_params()}
        return [p for p in self.model.parameters() if id(p) not in frozen]

    def frozen_buffers(self) -> Iterator[tuple[str, Tensor]]:
        """The frozen blocks' buffers with their names in the model."""
        for prefix, m in self.frozen_modules():
            for name, b in m.named_buffers():
                yield f"{prefix}.{name}", b

    def block_index(self) -> dict[int, int]:
        """``id(parameter) -> index`` of the (first) block holding it, over every block."""
        where: dict[int, int] = {}
        for i in range(len(self.blocks)):
            for _, m in self.modules(i):
                for p in m.parameters():
                    where.setdefault(id(p), i)
        return where

    def set_mode(self, mode: str) -> None:
        """Put the frozen block modules in ``eval`` mode (``train`` leaves them in train mode)."""
        for _, m in self.frozen_modules():
            m.train(mode == "train")


def _nothing() -> None:
    pass


class Mechanism:
    """How frozen blocks are kept fixed. Subclasses set ``name`` (a key of
    :data:`bench_lib.vocab.MECHANISMS`) and ``doc``, and override the hooks they need:

    * :meth:`prepare` runs once on a fresh model: sets flags and returns the parameters the
      optimizer gets;
    * :meth:`install` changes how the frozen block modules run (wrappers) and returns what
      removes that again;
    * :meth:`zero_grad`, :meth:`backward` and :meth:`after_backward` frame the backward pass.

    ``warm_steps`` is how many steps must run before the mechanism is in its steady state (a
    late freeze happens only then); the validity check runs after them. Mechanisms hold no
    state: one object serves every workload.
    """

    name: str
    doc: str
    warm_steps: int = 0

    def prepare(self, plan: FreezePlan) -> list[nn.Parameter]:
        return plan.trainable_params()

    def install(self, plan: FreezePlan) -> Uninstall:
        return _nothing

    def zero_grad(self, state: StepState) -> None:
        state.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, trainable: Sequence[nn.Parameter]) -> None:
        loss.backward()

    def after_backward(self, state: StepState) -> None:
        """Runs between backward and the optimizer step."""
