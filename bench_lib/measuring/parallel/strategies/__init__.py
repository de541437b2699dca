"""Data-parallel strategies, in a registry keyed by name (the names of
:data:`bench_lib.vocab.PARALLEL` but ``none``, which runs in one process).

Every module of this package is imported and each :class:`~.base.Strategy` object it defines
is registered: a strategy joins by adding a module (or an object to one).
"""

from __future__ import annotations

from ...registry import Registry
from ...spec import CaseError
from .base import GradPiece, Strategy, param_names

__all__ = ["STRATEGIES", "GradPiece", "Strategy", "get_strategy", "param_names"]

STRATEGIES: Registry[Strategy] = Registry(__name__, Strategy, "parallel", CaseError)

#: The strategy registered as a ``parallel`` value; :class:`CaseError` naming the choices.
get_strategy = STRATEGIES.lookup
