"""Data-parallel set-ups, in a registry keyed by name (the names of
:data:`bench_lib.vocab.PARALLEL` but ``none``, which runs in one process).

Every module of this package is imported and each :class:`~.base.Setup` object it defines is
registered: a set-up joins by adding a module (or an object to one).
"""

from __future__ import annotations

from ...registry import discover
from ...spec import CaseError
from .base import GradPiece, Setup, param_names

__all__ = ["SETUPS", "GradPiece", "Setup", "get_setup", "param_names"]

SETUPS: dict[str, Setup] = discover(__name__, Setup)


def get_setup(name: str) -> Setup:
    """The set-up registered as ``name``; :class:`CaseError` naming the choices otherwise."""
    if name not in SETUPS:
        raise CaseError(f"parallel={name!r} is not one of: {', '.join(SETUPS)}")
    return SETUPS[name]
