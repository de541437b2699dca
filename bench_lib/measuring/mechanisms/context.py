"""Module-level mechanisms: each frozen block module's own ``forward`` runs under a grad-mode
context, through a wrapper installed on the module in place (the model's ``forward`` and every
other module run unchanged).

The context is per block module: with ``inference_mode`` each frozen block's output is cloned
on its way out, also where the next block is frozen too (the first version cloned once per run
of consecutive frozen blocks, so its copies, time and memory were a little lower there).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..spec import CaseError
from .base import FreezePlan, Mechanism, Uninstall, uncovered_reason

__all__ = [
    "Around",
    "ContextMechanism",
    "InferenceMode",
    "NoGrad",
    "clone_tensors",
    "remove_all",
    "under_context",
    "wrap_forward",
]

ContextFactory = Callable[[], contextlib.AbstractContextManager[object]]


def clone_tensors(out: Any) -> Any:
    """``out`` with every tensor cloned, through tuples, lists and dicts (``ModelOutput`` too:
    a shallow copy with its values replaced); anything else is returned as is."""
    if isinstance(out, Tensor):
        return out.clone()
    if isinstance(out, dict):
        copy = out.copy()  # keeps the class of an OrderedDict subclass such as ModelOutput
        for k, v in out.items():
            copy[k] = clone_tensors(v)
        return copy
    if isinstance(out, (tuple, list)):
        items = [clone_tensors(v) for v in out]
        if hasattr(out, "_fields"):  # a namedtuple
            return type(out)(*items)
        return type(out)(items)
    return out


#: ``around(call, args, kwargs)``: run a module's own ``call(*args, **kwargs)`` its way.
Around = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


def wrap_forward(module: nn.Module, around: Around) -> Uninstall:
    """Make ``module``'s ``forward`` go through ``around(call, args, kwargs)``, where ``call``
    is the forward it had (the class's, or an instance-level wrapper installed earlier). Returns
    the function that restores that forward. The one helper behind every forward wrapper: the
    module-level mechanisms' (:func:`under_context`) and activation checkpointing's
    (:mod:`bench_lib.measuring.effects.checkpoint`).

    The wrapper is an instance attribute that shadows the class's ``forward``; it holds the
    module only weakly, so that the module and the wrapper form no reference cycle. Wrappers on
    one module must be removed in the reverse order of installation: removing one that another
    wrapper was installed over raises ``RuntimeError`` (and leaves both in place: removing it
    would silently drop the later one too); removing one twice, or after its module is gone,
    does nothing.
    """
    ref = weakref.ref(module)
    shadowed = module.__dict__.get("forward")  # an instance-level forward installed earlier
    plain = type(module).forward

    def call(*args: Any, **kwargs: Any) -> Any:
        m = ref()
        assert m is not None, "a module's wrapper outlived its module"
        return shadowed(*args, **kwargs) if shadowed is not None else plain(m, *args, **kwargs)

    def forward(*args: Any, **kwargs: Any) -> Any:
        return around(call, args, kwargs)

    module.__dict__["forward"] = forward
    removed = False

    def uninstall() -> None:
        nonlocal removed
        m = ref()
        if m is None or removed:
            return
        if m.__dict__.get("forward") is not forward:
            raise RuntimeError(f"{type(m).__name__}.forward was wrapped again after this wrapper")
        if shadowed is None:
            del m.__dict__["forward"]
        else:
            m.__dict__["forward"] = shadowed
        removed = True

    return uninstall


def under_context(context: ContextFactory, leave: Callable[[Any], Any]) -> Around:
    """An ``around`` for :func:`wrap_forward`: the forward runs under ``context()``, and its
    result goes through ``leave`` after the context is left."""

    def around(call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with context():
            out = call(*args, **kwargs)
        return leave(out)

    return around


def remove_all(removers: list[Uninstall]) -> Uninstall:
    """One function that removes every wrapper of ``removers`` in reverse order."""

    def uninstall() -> None:
        for remove in reversed(removers):
            remove()

    return uninstall


class ContextMechanism(Mechanism):
    """Frozen block modules run under :meth:`context`; :meth:`leave` converts their output
    outside it. Only the unfrozen parameters go to the optimizer. Raises :class:`CaseError` for
    a plan whose frozen parameters are not all inside frozen modules (``*.bias`` globs)."""

    module_level = True

    def context(self) -> contextlib.AbstractContextManager[object]:
        raise NotImplementedError

    def leave(self, out: Any) -> Any:
        return out

    def install(self, plan: FreezePlan) -> Uninstall:
        if plan.uncovered():
            raise CaseError(uncovered_reason(self.name, plan.uncovered()))
        around = under_context(self.context, self.leave)
        return remove_all([wrap_forward(m, around) for _, m in plan.frozen_modules()])


class NoGrad(ContextMechanism):
    name = "no_grad"
    doc = "frozen blocks run under torch.no_grad(); only unfrozen parameters go to the optimizer"

    def context(self) -> contextlib.AbstractContextManager[object]:
        return torch.no_grad()


class InferenceMode(ContextMechanism):
    name = "inference_mode"
    doc = (
        "frozen blocks run under torch.inference_mode(); each one's output is cloned outside it "
        "so autograd may save it"
    )

    def context(self) -> contextlib.AbstractContextManager[object]:
        return torch.inference_mode()

    def leave(self, out: Any) -> Any:
        # An inference tensor cannot be saved for backward; a clone made outside inference mode
        # is a normal tensor.
        return clone_tensors(out)


NO_GRAD, INFERENCE_MODE = NoGrad(), InferenceMode()
