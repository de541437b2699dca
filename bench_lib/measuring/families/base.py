"""The family interface: what a model family gives the suite for one case.

A family is one object behind :class:`Family`. For a :class:`~bench_lib.measuring.spec.Case` it
gives

* the model: an ``nn.Module`` whose own ``forward()`` runs unchanged (mechanisms that change how
  blocks run wrap the block modules, never the model's control flow);
* its freezable blocks in forward order, each a submodule name or a sequence of names taken as
  one block, anywhere in the model (patterns index this list);
* a seeded batch maker: a ``torch.Generator`` in, ``(inputs, targets)`` on the CPU out, the
  inputs a tensor, a tuple of tensors (positional arguments) or a dict of tensors (keywords);
* the loss ``(output, targets) -> scalar``;
* the family-specific sizes it reads from ``Case.extra`` (``seq_len``, ``image_size``, ...), with
  their defaults, and the number of blocks a case has, computed from the case alone (patterns
  resolve against it when the sweep is planned, before any model is built);
* why it cannot run on this machine, if it cannot (a missing optional dependency): its cases
  are then visible skips.

Dropout must be 0 (or absent): the validity checks compare gradients between runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from ..spec import Case

__all__ = [
    "Batch",
    "Block",
    "BlockNames",
    "Built",
    "Family",
    "Inputs",
    "call_model",
    "default_loss",
    "inputs_to",
]

#: A model's inputs: one tensor, positional tensors, or keyword tensors.
Inputs: TypeAlias = Tensor | tuple[Tensor, ...] | dict[str, Tensor]
Batch: TypeAlias = tuple[Inputs, Tensor]
#: How a family names a block: one submodule name, or several taken as one block.
BlockNames: TypeAlias = str | Sequence[str]
#: A block as the suite keeps it: its submodule names.
Block: TypeAlias = tuple[str, ...]


def default_loss(output: Any, targets: Tensor) -> Tensor:
    """Cross-entropy on ``output`` (or on ``output.logits`` where it has one), in float32, with
    the class dimension last; leading dimensions (batch, sequence) are flattened."""
    logits: Tensor = getattr(output, "logits", output)
    return nn.functional.cross_entropy(logits.float().flatten(0, -2), targets.flatten())


class Family:
    """One model family. Subclasses set ``name`` (a key of :data:`bench_lib.vocab.MODELS`) and
    ``sizes``, and implement :meth:`model`, :meth:`blocks` and :meth:`batch`.

    The suite seeds torch (``torch.manual_seed(case.seed)``) right before :meth:`model`, then
    moves the model to the case's device and dtype and puts it in train mode.
    """

    name: str
    #: Family-specific sizes read from ``Case.extra``, with their defaults.
    sizes: Mapping[str, int] = MappingProxyType({})

    def size(self, case: Case, key: str) -> int:
        """``case``'s value of the size ``key``; ``KeyError`` if the family has no such size."""
        if key not in self.sizes:
            raise KeyError(f"model {self.name!r} has no size {key!r} (sizes: {sorted(self.sizes)})")
        return case.option(key, self.sizes[key])

    def num_blocks(self, case: Case) -> int:
        """How many freezable blocks ``case``'s model has (patterns resolve against it). Cheap:
        computed from the case's sizes, without building the model."""
        return case.depth

    def unavailable(self) -> str | None:
        """``None`` when the family can build its models here, else why not (with the fix)."""
        return None

    def model(self, case: Case) -> nn.Module:
        """A fresh model for ``case`` on the CPU, in torch's default dtype."""
        raise NotImplementedError

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        """The freezable blocks of ``model`` in forward order, :meth:`num_blocks` of them."""
        raise NotImplementedError

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        """``(inputs, targets)`` on the CPU, drawn from ``gen`` only."""
        raise NotImplementedError

    def loss(self, case: Case, output: Any, targets: Tensor) -> Tensor:
        """The scalar loss of ``case``'s ``output`` against ``targets`` (default:
        :func:`default_loss`)."""
        return default_loss(output, targets)


@dataclass(frozen=True)
class Built:
    """What a family built for one case: the model (on the case's device and dtype) and its
    blocks as submodule names, in forward order."""

    family: Family
    case: Case
    model: nn.Module
    blocks: tuple[Block, ...]

    def make_batch(self, gen: torch.Generator) -> Batch:
        return self.family.batch(self.case, gen)

    def loss(self, output: Any, targets: Tensor) -> Tensor:
        return self.family.loss(self.case, output, targets)


def inputs_to(inputs: Inputs, device: torch.device, dtype: torch.dtype) -> Inputs:
    """``inputs`` on ``device``, floating-point tensors cast to ``dtype`` (ids and masks keep
    theirs)."""

    def move(t: Tensor) -> Tensor:
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    if isinstance(inputs, Tensor):
        return move(inputs)
    if isinstance(inputs, dict):
        return {k: move(v) for k, v in inputs.items()}
    return tuple(move(t) for t in inputs)


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)`` for a tensor, a tuple or a
    dict of inputs."""
    if isinstance(inputs, Tensor):
        return model(inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(*inputs)
