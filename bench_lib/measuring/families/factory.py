"""Your own model: family ``factory``, built by a function you name (``--bench-model-factory``).

The factory is ``MODULE:FUNCTION`` (an importable module) or ``path/to/file.py:FUNCTION``
(relative to the working directory). It is called with keyword arguments ``depth``, ``width``,
``batch_size``, ``seq_len`` and ``image_size`` (those its signature takes, or all of them where
it takes ``**kwargs``) and returns a :class:`ModelSpec`, or a mapping with the same keys:

* ``model``: an ``nn.Module``, a fresh one at every call (the suite builds several per case);
* ``blocks``: the freezable blocks in forward order, each a submodule name or a list of names
  taken as one block;
* ``make_batch``: ``torch.Generator -> (inputs, targets)`` on the CPU, drawing only from the
  generator; inputs a tensor, a tuple of tensors (positional) or a dict of tensors (keywords);
* ``loss`` (optional): ``(output, targets) -> scalar``; by default cross-entropy on the output
  (or ``output.logits``).

``make_batch`` and ``loss`` must not hold the model (they are kept between builds). Dropout must
be 0: the validity check compares gradients between runs. The case keeps the factory's spec, so
any process can rebuild the model from the case alone.

A factory is checked when the sweep is planned: it is imported and called once per size (on the
meta device, where its model can be built there, so that a big model costs nothing), and every
problem (an import that fails, a call that raises, a result of the wrong shape, a block that is
not a submodule) is a :class:`~bench_lib.measuring.spec.CaseError` naming the factory.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from ..spec import Case, CaseError
from .base import Batch, BlockNames, Family, default_loss

__all__ = ["FACTORY_ARGS", "FactoryFamily", "ModelSpec", "call_factory", "load_factory"]

#: The keyword arguments a factory is called with (it may take any of them).
FACTORY_ARGS = ("depth", "width", "batch_size", "seq_len", "image_size")


@dataclass(frozen=True)
class ModelSpec:
    """What a factory returns: the model, its blocks, the batch maker and (optionally) the
    loss. A mapping with these keys does as well."""

    model: nn.Module
    blocks: Sequence[BlockNames]
    make_batch: Callable[[torch.Generator], Batch]
    loss: Callable[[Any, Tensor], Tensor] | None = None


def _fail(spec: str, problem: str) -> CaseError:
    return CaseError(f"--bench-model-factory={spec!r}: {problem}")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


@functools.cache
def load_factory(spec: str) -> Callable[..., Any]:
    """The function ``spec`` names (``MODULE:FUNCTION`` or ``path.py:FUNCTION``). Raises
    :class:`CaseError` when it cannot be imported or is not a callable."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise _fail(spec, "give MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            path = Path(target)
            if not path.is_file():
                raise FileNotFoundError(f"no file {str(path.resolve())!r}")
            module_name = f"freeze_bench_factory_{path.stem}"
            loader = importlib.util.spec_from_file_location(module_name, path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up here
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except Exception as e:
        raise _fail(spec, f"cannot import {target!r}: {_one_line(e)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise _fail(spec, f"{target!r} has no function {name!r}")
    return fn  # type: ignore[no-any-return]


def _arguments(fn: Callable[..., Any], case: Case, family: Family) -> dict[str, int]:
    values = {
        "depth": case.depth,
        "width": case.width,
        "batch_size": case.batch_size,
        "seq_len": family.size(case, "seq_len"),
        "image_size": family.size(case, "image_size"),
    }
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass everything
        return values
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return values
    taken = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in values.items() if k in taken}


def _as_spec(spec: str, out: Any) -> ModelSpec:
    """``out`` as a checked :class:`ModelSpec`; :class:`CaseError` saying what is wrong."""
    keys = [f.name for f in fields(ModelSpec)]
    shape = f"a ModelSpec or a mapping with keys {', '.join(keys[:3])} (and optionally loss)"
    if isinstance(out, ModelSpec):
        parts = {k: getattr(out, k) for k in keys}
    elif isinstance(out, Mapping):
        missing = [k for k in keys[:3] if k not in out]
        unknown = sorted(str(k) for k in out if k not in keys)
        if missing or unknown:
            problem = f"returned a mapping missing {missing}, with unknown {unknown}"
            raise _fail(spec, f"{problem}: give {shape}")
        parts = {k: out.get(k) for k in keys}
    else:
        raise _fail(spec, f"returned {type(out).__name__}, not {shape}")
    model, blocks = parts["model"], parts["blocks"]
    if not isinstance(model, nn.Module):
        raise _fail(spec, f"'model' is a {type(model).__name__}, not an nn.Module")
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
        raise _fail(spec, f"'blocks' must be a non-empty list of submodule names, got {blocks!r}")
    for name in ("make_batch", "loss"):
        if parts[name] is not None and not callable(parts[name]):
            raise _fail(spec, f"{name!r} is a {type(parts[name]).__name__}, not a callable")
    if parts["make_batch"] is None:
        raise _fail(spec, "'make_batch' is None; give a function of a torch.Generator")
    seen: set[str] = set()
    for block in blocks:
        names = [block] if isinstance(block, str) else block
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise _fail(spec, f"block {block!r} is not a submodule name or a list of them")
        for n in names:
            if not isinstance(n, str):
                raise _fail(spec, f"block {block!r} is not a submodule name or a list of them")
            try:
                model.get_submodule(n)
            except AttributeError:
                raise _fail(spec, f"block {n!r} is not a submodule of the model") from None
            if n in seen:
                raise _fail(spec, f"block {n!r} is named twice")
            seen.add(n)
    return ModelSpec(model, list(blocks), parts["make_batch"], parts["loss"])


def call_factory(case: Case, *, meta: bool = False) -> ModelSpec:
    """Call ``case``'s factory for its sizes and check the result. With ``meta`` the call runs
    under ``torch.device('meta')`` (parameters without storage), and again without it where that
    raises. Raises :class:`CaseError` naming the factory and the problem."""
    fn = load_factory(case.factory)
    kwargs = _arguments(fn, case, FACTORY)
    if meta:
        try:
            with torch.device("meta"):
                return _as_spec(case.factory, fn(**kwargs))
        except Exception:  # a factory that cannot build on meta: build it for real below
            pass
    try:
        out = fn(**kwargs)
    except Exception as e:
        raise _fail(case.factory, f"the factory raised {_one_line(e)}") from None
    return _as_spec(case.factory, out)


def _size_key(case: Case) -> tuple[Any, ...]:
    return (case.factory, case.depth, case.width, case.batch_size, case.extra)


@dataclass(frozen=True)
class _Parts:
    """A factory's result without its model (which must not outlive its case)."""

    blocks: Sequence[BlockNames]
    make_batch: Callable[[torch.Generator], Batch]
    loss: Callable[[Any, Tensor], Tensor] | None


class FactoryFamily(Family):
    """The family of a user's factory (``case.factory``). Its block count comes from one call
    per size on the meta device; the batch maker and loss from the last real call."""

    name = "factory"
    sizes = MappingProxyType({"seq_len": 32, "image_size": 32})

    def __init__(self) -> None:
        self._counts: dict[tuple[Any, ...], int] = {}
        self._parts: dict[tuple[Any, ...], _Parts] = {}

    def num_blocks(self, case: Case) -> int:
        key = _size_key(case)
        if key not in self._counts:
            self._counts[key] = len(call_factory(case, meta=True).blocks)
        return self._counts[key]

    def _spec(self, case: Case) -> _Parts:
        key = _size_key(case)
        if key not in self._parts:
            self.model(case)
        return self._parts[key]

    def model(self, case: Case) -> nn.Module:
        spec = call_factory(case)
        self._parts[_size_key(case)] = _Parts(spec.blocks, spec.make_batch, spec.loss)
        return spec.model

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        return self._spec(case).blocks

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        return self._spec(case).make_batch(gen)

    def loss(self, case: Case, output: Any, targets: Tensor) -> Tensor:
        loss = self._spec(case).loss
        return loss(output, targets) if loss is not None else default_loss(output, targets)


FACTORY = FactoryFamily()
