"""Step-axis effects, in a registry keyed by axis name: what an axis's value does to a workload.

Every module of this package is imported and each :class:`~.base.Effect` object it defines is
registered (``amp``, ``compile``, ``checkpoint``, ``adapter``). An axis declared elsewhere names
the module of its effect in its declaration (``bench_lib.axes.AXES[name].effect``, a dotted
module path); :func:`get_effect` imports it there. An effect is *active* for a case whose value
on its axis is not the axis default (:func:`active`), and only active effects act.

Where the steps run, one interface serves: :func:`bench_lib.measuring.training.build_workload`
(in this process) and :func:`bench_lib.measuring.parallel.workload.build_rank_workload` (in each
worker) call :func:`prepare_model`, :func:`plan_type`, :func:`optimizer_params`,
:func:`install` and build a :class:`StepEffects`; the runner and the workers enter
:func:`case_scope` and a :class:`Watch`; nobody branches on an axis value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ...axes import AXES, Axis
from ..families.base import Built, Inputs, call_model
from ..mechanisms.base import FreezePlan, StepState, Uninstall
from ..mechanisms.context import remove_all
from ..registry import Registry
from ..spec import Case, CaseError
from .base import Effect, ForwardLoss, Loss, StepError

__all__ = [
    "REGISTRY",
    "Effect",
    "StepEffects",
    "StepError",
    "Watch",
    "active",
    "axis_table",
    "axis_twin",
    "calibration_steps",
    "case_scope",
    "failure_message",
    "get_effect",
    "install",
    "optimizer_params",
    "plan_type",
    "prepare_model",
    "skip_reason",
    "watch_record",
]

REGISTRY: Registry[Effect] = Registry(__name__, Effect, "effect", CaseError)


def axis_table() -> dict[str, Axis]:
    """Every axis that may have an effect: the shared axis table (:data:`bench_lib.axes.AXES`,
    an axis declared outside the package included)."""
    return AXES


def get_effect(name: str) -> Effect:
    """The effect of axis ``name``: this package's, else the one defined in the module its
    declaration names. Raises :class:`CaseError` naming the axes with effects otherwise."""
    if name in REGISTRY:
        return REGISTRY[name]
    info = axis_table().get(name)
    if info is None or not info.effect:
        with_effects = [*REGISTRY, *(n for n, a in axis_table().items() if a.effect)]
        raise CaseError(f"axis={name!r} has no effect; axes with one: {', '.join(with_effects)}")
    module = importlib.import_module(info.effect)
    found = [obj for obj in vars(module).values() if isinstance(obj, Effect)]
    if len(found) != 1 or found[0].name != name:
        raise CaseError(
            f"module {info.effect!r} (the effect of axis {name!r}) must define one Effect named "
            f"{name!r}; it defines {[e.name for e in found]}"
        )
    return found[0]


def active(case: Case) -> list[Effect]:
    """The effects acting on ``case`` (its value on their axis is not the default), innermost
    first (:attr:`Effect.order`, then name)."""
    found = [
        get_effect(name)
        for name, info in axis_table().items()
        if (name in REGISTRY or info.effect) and getattr(case, name) != info.default
    ]
    return sorted(found, key=lambda e: (e.order, e.name))


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot run, from its active effects' checks that need torch (the first
    reason), or ``None``."""
    for effect in active(case):
        reason = effect.skip_reason(case)
        if reason is not None:
            return reason
    return None


@contextlib.contextmanager
def case_scope(case: Case) -> Iterator[None]:
    """Every active effect's :meth:`~Effect.scope`, around a whole case."""
    with contextlib.ExitStack() as stack:
        for effect in active(case):
            stack.enter_context(effect.scope(case))
        yield


def calibration_steps(case: Case) -> int:
    """Untimed steps the active effects need beyond the mechanism's."""
    return sum(effect.calibration_steps for effect in active(case))


def axis_twin(case: Case) -> tuple[str, Case] | None:
    """The axes ``case`` sets whose cost is timed (``"checkpoint"``, ``"amp+compile"``) and its
    twin with them at their defaults; ``None`` when there is none."""
    table = axis_table()
    names = sorted(e.name for e in active(case) if e.twin)
    if not names:
        return None
    twin = dataclasses.replace(case, **{n: table[n].default for n in names})
    return "+".join(n for n in table if n in names), twin


def failure_message(case: Case, e: BaseException) -> str | None:
    """``e`` explained by the active effect it belongs to (``None``: none claims it)."""
    for effect in active(case):
        message = effect.failure(e)
        if message is not None:
            return message
    return None


def prepare_model(case: Case, built: Built) -> None:
    """Every active effect's change to the built model, before its freeze plan."""
    for effect in active(case):
        effect.prepare_model(case, built)


def plan_type(case: Case) -> type[FreezePlan]:
    """The freeze plan's class: an active effect's where one asks for its own (two asking for
    different ones is a :class:`CaseError`), else :class:`FreezePlan`."""
    asked = {t for e in active(case) if (t := e.plan_type(case)) is not None}
    if len(asked) > 1:
        raise CaseError(f"{case.id}: the effects ask for different freeze plans: {asked}")
    return asked.pop() if asked else FreezePlan


def optimizer_params(
    case: Case, plan: FreezePlan, params: list[nn.Parameter]
) -> list[nn.Parameter]:
    """The parameters the optimizer gets, after every active effect's filter."""
    for effect in active(case):
        params = effect.optimizer_params(case, plan, params)
    return params


def install(case: Case, plan: FreezePlan, uninstall: Uninstall) -> Uninstall:
    """Install the active effects' wrappers after the mechanism's (whose ``uninstall`` is
    given); returns what removes all of them, in reverse order of installation."""
    removers = [uninstall]
    for effect in active(case):
        remove = effect.install(case, plan)
        if remove is not None:
            removers.append(remove)
    return remove_all(removers)


def _forward_loss(model: nn.Module, loss: Loss, inputs: Inputs, targets: Tensor) -> Tensor:
    return loss(call_model(model, inputs), targets)


class StepEffects:
    """The active effects of one workload around its step: forward and loss (wrapped by each),
    loss scaling, after backward, and the optimizer step. ``states`` holds each effect's
    per-workload state by axis name (``states["amp"]``: fp16's GradScaler)."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case = case
        self.effects = active(case)
        self.states: dict[str, Any] = {e.name: e.new_state(case, device) for e in self.effects}
        self._run: ForwardLoss = _forward_loss
        self._eager: ForwardLoss = _forward_loss
        for effect in self.effects:
            self._run = effect.wrap_forward_loss(case, self._run, device, eager=False)
            self._eager = effect.wrap_forward_loss(case, self._eager, device, eager=True)

    def forward_loss(
        self, model: nn.Module, loss: Loss, inputs: Inputs, targets: Tensor, *, eager: bool
    ) -> Tensor:
        """The loss of forward and loss under the effects; ``eager`` without compiled code."""
        return (self._eager if eager else self._run)(model, loss, inputs, targets)

    def scale(self, loss: Tensor) -> Tensor:
        for effect in self.effects:
            loss = effect.scale(self.states[effect.name], loss)
        return loss

    def after_backward(self, optimizer: torch.optim.Optimizer, step: StepState) -> None:
        """Right after backward: unscale the gradients, then the per-step hooks."""
        for effect in self.effects:
            effect.unscale(self.states[effect.name], optimizer)
        for effect in self.effects:
            effect.after_backward(self.states[effect.name], step)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step through the first effect that steps the optimizer, else ``optimizer.step()``."""
        for effect in self.effects:
            if effect.optimizer_step(self.states[effect.name], optimizer):
                return
        optimizer.step()


class Watch:
    """The active effects' counts over a case's first steps, in the process that runs them:
    :meth:`start`, then :meth:`stop` returns ``{axis: counts}`` (plain data)."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._tokens: dict[str, tuple[Effect, Any]] = {}

    def start(self) -> None:
        for effect in active(self.case):
            token = effect.watch_start(self.case)
            if token is not None:
                self._tokens[effect.name] = (effect, token)

    def stop(self) -> dict[str, dict[str, Any]]:
        counts = {name: effect.watch_stop(token) for name, (effect, token) in self._tokens.items()}
        self._tokens.clear()
        return counts


def watch_record(
    case: Case, ranks: Sequence[dict[str, dict[str, Any]]], extra_s: float | None
) -> dict[str, Any]:
    """Record fields from every rank's :meth:`Watch.stop` (one dict in process), through each
    active effect's :meth:`~Effect.watch_record`; raises :class:`StepError` where the counts
    show the case cannot be measured."""
    out: dict[str, Any] = {}
    for effect in active(case):
        counts = [r[effect.name] for r in ranks if effect.name in r]
        if counts:
            out.update(effect.watch_record(case, counts, extra_s))
    return out
