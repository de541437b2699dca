"""Freeze mechanisms, in a registry keyed by name (the names of
:data:`bench_lib.vocab.MECHANISMS`).

Every module of this package is imported and each :class:`~.base.Mechanism` object it defines
is registered in :data:`REGISTRY`: a mechanism joins by adding a module (or an object to one).
"""

from __future__ import annotations

from ..registry import Registry
from ..spec import CaseError
from .base import FreezePlan, Mechanism, StepState

__all__ = ["REGISTRY", "FreezePlan", "Mechanism", "StepState", "get_mechanism"]

#: The mechanism objects by name (their names are :data:`bench_lib.vocab.MECHANISMS`).
REGISTRY: Registry[Mechanism] = Registry(__name__, Mechanism, "mechanism", CaseError)

#: The mechanism registered as a name; :class:`CaseError` naming the choices otherwise.
get_mechanism = REGISTRY.lookup
