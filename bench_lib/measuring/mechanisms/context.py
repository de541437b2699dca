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

__all__ = ["ContextMechanism", "InferenceMode", "NoGrad", "clone_tensors", "wrap_forward"]

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


def wrap_forward(
    module: nn.Module, context: ContextFactory, leave: Callable[[Any], Any]
) -> Uninstall:
    """Make ``module`` run its ``forward`` under ``context()`` and pass the result through
    ``leave`` after the context is left. Returns the function that restores the plain forward.

    The wrapper is an instance attribute that shadows the class's ``forward``; it holds the
    module only weakly, so that the module and the wrapper form no reference cycle. Wrappers on
    one module must be removed in the reverse order of installation (``RuntimeError`` if not);
    removing one twice does nothing.
    """
    ref = weakref.ref(module)
    shadowed = module.__dict__.get("forward")  # an instance-level forward installed earlier
    plain = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        m = ref()
        assert m is not None, "a module's wrapper outlived its module"
        with context():
            out = shadowed(*args, **kwargs) if shadowed is not None else plain(m, *args, **kwargs)
        return leave(out)

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
        removers = [wrap_forward(m, self.context, self.leave) for _, m in plan.frozen_modules()]

        def uninstall() -> None:
            for remove in reversed(removers):
                remove()

        return uninstall


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
