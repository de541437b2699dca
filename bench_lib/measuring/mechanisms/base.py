"""The mechanism interface, and the freeze plan it acts on.

A :class:`FreezePlan` is a model, its blocks (submodule names, from the model's family) and the
indices of the frozen ones, or (pattern ``names``) globs matched against parameter names. It
answers which parameters, modules and buffers are frozen:

* frozen parameters are every parameter of the frozen blocks' modules, by identity (a parameter
  tied to a module outside the block is frozen with the block: GPT-2's LM head shares
  ``wte.weight``, so freezing the embeddings freezes the head's weight); with globs, exactly the
  parameters one of whose names (``named_parameters(remove_duplicate=False)``) matches;
* every other parameter (unfrozen blocks, heads, final norms outside every block) trains;
* frozen modules are the frozen blocks' modules; with globs, the largest submodules whose
  parameter names all match (a module without parameters never counts, nor a container without
  a ``forward`` such as ``ModuleList``: it is never called). Module-level
  mechanisms wrap these, so frozen parameters outside all of them (``*.bias``) cannot be frozen
  that way: see :meth:`FreezePlan.uncovered`;
* frozen buffers are the frozen modules' buffers.

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
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Protocol

import torch
from torch import Tensor, nn

from ..spec import CaseError

__all__ = [
    "FreezePlan",
    "Mechanism",
    "NameMatch",
    "StepState",
    "Uninstall",
    "match_names",
    "uncovered_reason",
]

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


def _shown(names: Sequence[str], limit: int = 4) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class NameMatch:
    """What parameter-name globs freeze in a model: every parameter name matched
    (``named_parameters(remove_duplicate=False)``, so a tied parameter's every name counts), the
    largest submodules whose parameter names all match, and the matched names outside them."""

    names: tuple[str, ...]
    modules: tuple[str, ...]
    uncovered: tuple[str, ...]


def match_names(model: nn.Module, globs: Sequence[str]) -> NameMatch:
    """Match ``globs`` (``fnmatch``, case-sensitive) against ``model``'s parameter names.

    Raises :class:`CaseError` naming the glob that matches no parameter, or the globs when they
    match every parameter (nothing would train).
    """
    named = list(model.named_parameters(remove_duplicate=False))
    names = [n for n, _ in named]
    for glob in globs:
        if not any(fnmatchcase(n, glob) for n in names):
            raise CaseError(
                f"--bench-freeze glob {glob!r} matches no parameter name of {type(model).__name__} "
                f"(names look like: {_shown(names, 3)})"
            )
    matched = [n for n in names if any(fnmatchcase(n, g) for g in globs)]
    frozen = {id(p) for n, p in named if n in set(matched)}
    if all(id(p) in frozen for _, p in named):
        raise CaseError(
            f"--bench-freeze={','.join(globs)!r} matches every parameter of "
            f"{type(model).__name__}: nothing would train"
        )
    hit = set(matched)
    modules: list[str] = []
    for prefix, module in model.named_modules():
        if not prefix or any(prefix.startswith(f"{m}.") for m in modules):
            continue
        if type(module).forward is nn.Module.forward:
            continue  # a container (ModuleList, ModuleDict) is never called: look inside
        own = [f"{prefix}.{n}" for n, _ in module.named_parameters(remove_duplicate=False)]
        if own and all(n in hit for n in own):
            modules.append(prefix)
    covered = {f"{m}.{n}" for m in modules for n, _ in model.get_submodule(m).named_parameters(
        remove_duplicate=False)}  # fmt: skip
    uncovered = tuple(n for n in matched if n not in covered)
    return NameMatch(tuple(matched), tuple(modules), uncovered)


def uncovered_reason(mechanism: str, uncovered: Sequence[str]) -> str:
    """Why module-level ``mechanism`` cannot freeze parameters that no frozen module covers."""
    return (
        f"{mechanism} acts on whole modules, and {len(uncovered)} matched parameters are in no "
        f"module whose parameters all match: {_shown(uncovered)} (a parameter-level mechanism "
        "such as requires_grad freezes them)"
    )


@dataclass(frozen=True)
class FreezePlan:
    """``model``'s ``blocks`` (submodule names each) with the ``frozen`` block indices, or, with
    ``names`` (pattern ``names``), the parameters whose names match those globs.

    Raises :class:`CaseError` for a frozen index outside the blocks, and (through
    :func:`match_names`) for globs that match nothing or everything.
    """

    model: nn.Module
    blocks: tuple[tuple[str, ...], ...]
    frozen: frozenset[int]
    names: tuple[str, ...] = ()
    match: NameMatch | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        bad = sorted(i for i in self.frozen if not 0 <= i < len(self.blocks))
        if bad:
            raise CaseError(
                f"frozen block index {bad[0]} is out of range for a model of "
                f"{len(self.blocks)} blocks (valid: 0..{len(self.blocks) - 1})"
            )
        if self.names:
            object.__setattr__(self, "match", match_names(self.model, self.names))

    def modules(self, block: int) -> list[tuple[str, nn.Module]]:
        """The named modules of block ``block``."""
        return [(name, self.model.get_submodule(name)) for name in self.blocks[block]]

    def frozen_modules(self) -> list[tuple[str, nn.Module]]:
        """The named modules of the frozen blocks, in block order; with globs, the largest
        submodules whose parameters all match, in model order."""
        if self.match is not None:
            return [(name, self.model.get_submodule(name)) for name in self.match.modules]
        return [m for i in sorted(self.frozen) for m in self.modules(i)]

    def frozen_names(self) -> set[str]:
        """The parameter names (every name of a tied parameter) frozen directly: matched by the
        globs, or under a frozen block's module."""
        if self.match is not None:
            return set(self.match.names)
        return {
            f"{prefix}.{n}"
            for prefix, m in self.frozen_modules()
            for n, _ in m.named_parameters(remove_duplicate=False)
        }

    def frozen_params(self) -> list[nn.Parameter]:
        """The frozen parameters, each once: the frozen blocks' in block order; with globs, the
        matched ones in model order."""
        if self.match is not None:
            hit = set(self.match.names)
            named = self.model.named_parameters(remove_duplicate=False)
            return list({id(p): p for n, p in named if n in hit}.values())
        params = {id(p): p for _, m in self.frozen_modules() for p in m.parameters()}
        return list(params.values())

    def tied_frozen(self) -> int:
        """How many frozen parameters are tied: also registered under a name that is not frozen
        directly (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``)."""
        direct = self.frozen_names()
        frozen = {id(p) for p in self.frozen_params()}
        return len(
            {
                id(p)
                for n, p in self.model.named_parameters(remove_duplicate=False)
                if id(p) in frozen and n not in direct
            }
        )

    def uncovered(self) -> tuple[str, ...]:
        """Matched parameter names that no frozen module covers (module-level mechanisms cannot
        freeze them); always empty for block patterns."""
        return self.match.uncovered if self.match is not None else ()

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
    #: Acts on frozen modules (wrappers) rather than on frozen parameters.
    module_level: bool = False

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
