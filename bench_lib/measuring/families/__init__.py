"""Model families, in a registry keyed by name (the names of :data:`bench_lib.vocab.MODELS`).

Every module of this package is imported and each :class:`~.base.Family` object it defines
is registered: a family joins by adding a module. :func:`build` turns a case into its model
and blocks; ``build(case, meta=True)`` builds its skeleton on the meta device (parameters
without storage), enough to read names and structure at plan time at no cost.
"""

from __future__ import annotations

import torch

from ..registry import Registry
from ..spec import Case, CaseError, set_block_counter
from .base import Built, Family

__all__ = ["FAMILIES", "build", "family_size", "family_sizes", "get_family", "num_blocks"]

FAMILIES: Registry[Family] = Registry(__name__, Family, "model", CaseError)

#: The family registered as a name; :class:`CaseError` naming the choices otherwise.
get_family = FAMILIES.lookup


def num_blocks(case: Case) -> int:
    """The number of freezable blocks of ``case``'s model, from its family's sizes."""
    return get_family(case.model).num_blocks(case)


# A Case counts its blocks through the families, which it does not import (they import it).
set_block_counter(num_blocks)


def family_size(case: Case, key: str) -> int | None:
    """``case``'s value of a family size (``seq_len``, ``image_size``), or ``None`` if its
    family has no such size."""
    family = get_family(case.model)
    return family.size(case, key) if key in family.sizes else None


def _skeleton(family: Family, case: Case) -> torch.nn.Module:
    try:
        with torch.device("meta"):
            return family.model(case)
    except Exception:  # a model that cannot be built on meta (a user's factory): build it
        return family.model(case)


def family_sizes(case: Case) -> dict[str, int]:
    """Every family-specific size of ``case`` (``Case.extra`` over the family's defaults)."""
    family = get_family(case.model)
    return {key: family.size(case, key) for key in family.sizes}


def build(case: Case, *, meta: bool = False) -> Built:
    """Build ``case``'s model (seeded with ``case.seed``) on its device and dtype, in train mode,
    with its blocks; with ``meta``, on the meta device (unseeded, no storage: for names and
    structure only; on the CPU where the model cannot be built on meta).

    Raises ``ValueError`` when the family's blocks are not :meth:`~.base.Family.num_blocks`
    distinct submodules of the model.
    """
    family = get_family(case.model)
    if meta:
        model = _skeleton(family, case)
    else:
        torch.manual_seed(case.seed)
        model = family.model(case)
        model.to(device=torch.device(case.device), dtype=getattr(torch, case.dtype))
    model.train()
    blocks = tuple(
        (names,) if isinstance(names, str) else tuple(names) for names in family.blocks(case, model)
    )
    seen: set[str] = set()
    for block in blocks:
        if not block:
            raise ValueError(f"model {family.name!r} has an empty block: {blocks}")
        for name in block:
            model.get_submodule(name)  # AttributeError naming the missing submodule
            if name in seen:
                raise ValueError(f"model {family.name!r} names submodule {name!r} in two blocks")
            seen.add(name)
    if len(blocks) != family.num_blocks(case):
        raise ValueError(
            f"model {family.name!r} gave {len(blocks)} blocks for {family.num_blocks(case)}"
        )
    return Built(family, case, model, blocks)
