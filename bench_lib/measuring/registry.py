"""Registries filled by discovery: every module of a package is imported, and the objects of a
kind it defines at module level are registered under their ``name``.

A new model family, freeze mechanism, parallel strategy or step-axis effect joins by adding one
module to its package; no list or if/elif chain is edited. :class:`Registry` is the one lookup
all of them use.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Protocol, TypeVar

__all__ = ["Registry", "discover"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=_Named)


def discover(package: str, kind: type[T]) -> dict[str, T]:
    """Instances of ``kind`` at module level in the modules of ``package``, keyed by their
    ``name``, in module order (alphabetical) and then definition order.

    The same object found in two modules (one imports it from the other) counts once. Raises
    ``ValueError`` when two different objects share a name.
    """
    found: dict[str, T] = {}
    path = importlib.import_module(package).__path__
    for info in pkgutil.iter_modules(path, prefix=f"{package}."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if not isinstance(obj, kind):
                continue
            other = found.setdefault(obj.name, obj)
            if other is not obj:
                raise ValueError(
                    f"two {kind.__name__} objects are named {obj.name!r} ({info.name})"
                )
    return found


class Registry(dict[str, T]):
    """The ``kind`` objects of ``package`` by name (:func:`discover`), a dict (tests may add
    entries), with :meth:`lookup`: the object, or ``error`` (the caller's
    :class:`~.spec.CaseError`; ``KeyError`` by default) whose message names the value and the
    choices: ``{field}={name!r} is not one of: ...``."""

    def __init__(
        self,
        package: str,
        kind: type[T],
        field: str,
        error: type[Exception] = KeyError,
    ) -> None:
        super().__init__(discover(package, kind))
        self.field = field
        self.error = error

    def lookup(self, name: str) -> T:
        """The object registered as ``name``; ``error`` naming the choices otherwise."""
        if name not in self:
            raise self.error(f"{self.field}={name!r} is not one of: {', '.join(self)}")
        return self[name]
