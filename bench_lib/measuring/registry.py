"""Registries filled by discovery: every module of a package is imported, and the objects of a
kind it defines at module level are registered under their ``name``.

A new model family or freeze mechanism joins by adding one module to its package; no list or
if/elif chain is edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Protocol, TypeVar

__all__ = ["discover"]


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
