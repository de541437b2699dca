"""Freeze mechanisms, in a registry keyed by name (the names of
:data:`bench_lib.vocab.MECHANISMS`).

Every module of this package is imported and each :class:`~.base.Mechanism` object it defines
is registered: a mechanism joins by adding a module (or an object to one).
"""

from __future__ import annotations

from ..registry import discover
from ..spec import CaseError
from .base import FreezePlan, Mechanism, StepState

__all__ = ["MECHANISMS", "FreezePlan", "Mechanism", "StepState", "get_mechanism"]

MECHANISMS: dict[str, Mechanism] = discover(__name__, Mechanism)


def get_mechanism(name: str) -> Mechanism:
    """The mechanism registered as ``name``; :class:`CaseError` naming the choices otherwise."""
    if name not in MECHANISMS:
        raise CaseError(f"mechanism={name!r} is not one of: {', '.join(MECHANISMS)}")
    return MECHANISMS[name]
