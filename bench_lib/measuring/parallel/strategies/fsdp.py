"""Fully sharded data parallelism: FSDP2 (``fully_shard``) and FSDP1
(``FullyShardedDataParallel``), each block its own unit and the root the last.

* FSDP2 turns every parameter into a DTensor sharded on dim 0 (``torch.chunk`` over the ranks);
  parameters that do not require grad may sit beside trainable ones in a unit.
* FSDP1 flattens each unit's parameters into one ``FlatParameter`` and shards that. With
  ``use_orig_params=False`` the flat parameter has one ``requires_grad`` for all of them, and
  FSDP1 refuses a unit that mixes frozen and trainable parameters; with
  ``use_orig_params=True`` the original parameters stay visible (as views of the shard) and may
  mix. A rank's gradient is its shard of the flat gradient; ``_shard_param_infos`` (FSDP1's own
  bookkeeping) says which slice of which parameter each part of it is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Set

import torch
from torch import Tensor, nn

from ...families.base import Built
from .base import GradPiece, Strategy

__all__ = ["Fsdp1", "Fsdp2", "clean_name"]

_WRAPPED = "_fsdp_wrapped_module"


def clean_name(name: str) -> str:
    """A name under FSDP1's wrappers as the unwrapped model has it (``blocks.0._fsdp_wrapped_
    module.0.weight`` -> ``blocks.0.0.weight``)."""
    return ".".join(part for part in name.split(".") if part != _WRAPPED)


def _block_modules(built: Built) -> list[list[nn.Module]]:
    return [[built.model.get_submodule(n) for n in block] for block in built.blocks]


class Fsdp2(Strategy):
    name = "fsdp"
    doc = "FSDP2: fully_shard on every block, then on the root"

    def wrap(self, built: Built, device: torch.device) -> nn.Module | None:
        from torch.distributed.fsdp import fully_shard

        for modules in _block_modules(built):
            fully_shard(modules if len(modules) > 1 else modules[0])
        fully_shard(built.model)
        return None

    def optimizer_params(
        self, built: Built, wrapper: nn.Module | None, names: Set[str]
    ) -> list[nn.Parameter]:
        return [p for n, p in built.model.named_parameters() if n in names]

    def grad_pieces(
        self,
        built: Built,
        wrapper: nn.Module | None,
        reference: Mapping[str, Tensor],
        rank: int,
        world: int,
    ) -> list[GradPiece]:
        pieces = []
        for n, p in built.model.named_parameters():
            if n not in reference:
                continue
            ref = reference[n]
            chunks = torch.chunk(ref, world, dim=0)
            expected = chunks[rank] if rank < len(chunks) else ref[:0]
            grad = None if p.grad is None else p.grad.to_local()  # type: ignore[attr-defined]
            pieces.append(GradPiece(n, grad, expected))
        return pieces


def _shares_outside(model: nn.Module, module: nn.Module) -> bool:
    """Whether a parameter of ``module`` is also a parameter of ``model`` outside ``module``
    (GPT-2's ``wte.weight``, which is ``lm_head.weight``)."""
    inside = {id(p) for p in module.parameters()}
    inside_modules = {id(m) for m in module.modules()}
    outside = {
        id(p)
        for m in model.modules()
        if id(m) not in inside_modules
        for p in m.parameters(recurse=False)
    }
    return bool(inside & outside)


class Fsdp1(Strategy):
    """``FullyShardedDataParallel`` with every block its own unit (``lambda_auto_wrap_policy``)
    and the root holding the rest. A block module that shares a parameter with a module outside
    it (tied embeddings) stays in the root: FSDP1 flattens a shared parameter into the first
    unit that wraps it and drops the gradient of its use in another unit (torch 2.13: GPT-2's
    ``wte.weight`` got the embedding's gradient only, without the LM head's), so a shared
    parameter must sit in the lowest unit above all its uses, as FSDP1's documentation asks."""

    def __init__(self, name: str, doc: str, use_orig_params: bool) -> None:
        self.name = name
        self.doc = doc
        self.use_orig_params = use_orig_params

    def wrap(self, built: Built, device: torch.device) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

        blocks = {
            id(m)
            for modules in _block_modules(built)
            for m in modules
            if not _shares_outside(built.model, m)
        }
        policy = functools.partial(lambda_auto_wrap_policy, lambda_fn=lambda m: id(m) in blocks)
        # FSDP1 takes the device of its shards from device_id, on CPU as well.
        return FullyShardedDataParallel(
            built.model,
            device_id=device,
            use_orig_params=self.use_orig_params,
            auto_wrap_policy=policy,
        )

    def _units(self, wrapper: nn.Module | None) -> Iterator[tuple[str, nn.Parameter]]:
        """``(prefix, flat parameter)`` of every FSDP unit holding parameters."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        assert wrapper is not None
        for name, module in wrapper.named_modules():
            handle = getattr(module, "_handle", None)
            if isinstance(module, FullyShardedDataParallel) and handle is not None:
                prefix = clean_name(name)
                yield (f"{prefix}." if prefix else ""), handle.flat_param

    def optimizer_params(
        self, built: Built, wrapper: nn.Module | None, names: Set[str]
    ) -> list[nn.Parameter]:
        assert wrapper is not None
        if self.use_orig_params:
            return [p for n, p in wrapper.named_parameters() if clean_name(n) in names]
        # A flat parameter is all or nothing: it goes to the optimizer if it holds any
        # parameter meant to train (frozen ones beside them would move with it).
        return [
            flat
            for prefix, flat in self._units(wrapper)
            if any(f"{prefix}{fqn}" in names for fqn in flat._fqns)  # type: ignore[attr-defined]
        ]

    def grad_pieces(
        self,
        built: Built,
        wrapper: nn.Module | None,
        reference: Mapping[str, Tensor],
        rank: int,
        world: int,
    ) -> list[GradPiece]:
        pieces = []
        for prefix, flat in self._units(wrapper):
            infos = flat._shard_param_infos  # type: ignore[attr-defined]
            for fqn, info in zip(flat._fqns, infos, strict=True):  # type: ignore[attr-defined]
                name = f"{prefix}{fqn}"
                if name not in reference or not info.in_shard:
                    continue
                start, end = info.intra_param_start_idx, info.intra_param_end_idx
                expected = reference[name].reshape(-1)[start : end + 1]
                grad = flat.grad
                if grad is not None:
                    grad = grad[info.offset_in_shard : info.offset_in_shard + info.numel_in_shard]
                pieces.append(GradPiece(name, grad, expected))
        return pieces


FSDP2 = Fsdp2()
FSDP1 = Fsdp1(
    "fsdp1",
    "FSDP1: FullyShardedDataParallel(use_orig_params=False), every block its own unit",
    use_orig_params=False,
)
FSDP1_ORIG_PARAMS = Fsdp1(
    "fsdp1_orig_params",
    "FSDP1: FullyShardedDataParallel(use_orig_params=True), every block its own unit",
    use_orig_params=True,
)
