"""The effect interface: what one step axis's value does to a workload.

An :class:`Effect` serves one axis (its ``name`` is the axis name). It is *active* for a case
whose value on that axis is not the axis default (:func:`bench_lib.measuring.effects.active`);
only active effects are asked anything. Every hook has a default that does nothing, so an
effect overrides only what it needs. The hooks, in the order a case meets them:

* :meth:`Effect.skip_reason`: why the case cannot run here, where telling needs torch (peft
  missing, no layer to adapt); a visible skip at plan time;
* :meth:`Effect.scope`: a context around the whole case, in the pytest process and in every
  worker (compile: dynamo reset, recompile limit as an error);
* :meth:`Effect.prepare_model`: the built model, before the freeze plan (adapter: inject LoRA);
* :meth:`Effect.plan_type`: the freeze plan's class (adapter: what trains is the adapters);
* :meth:`Effect.optimizer_params`: the parameters the optimizer gets, from the mechanism's;
* :meth:`Effect.install`: wrappers on the model after the mechanism's (checkpoint); what it
  returns removes them;
* :meth:`Effect.wrap_forward_loss`: wrap the callable that runs forward and loss (amp:
  autocast; compile: ``torch.compile``), innermost first in :attr:`Effect.order`;
* :meth:`Effect.new_state` then :meth:`Effect.scale`, :meth:`Effect.unscale`,
  :meth:`Effect.after_backward` and :meth:`Effect.optimizer_step`: per workload, around
  backward and the optimizer step (fp16: GradScaler; a future gradient clipping:
  :meth:`Effect.after_backward`);
* :meth:`Effect.watch_start` / :meth:`Effect.watch_stop` over the first steps (where the steps
  run: in a worker for a parallel case), and :meth:`Effect.watch_record`, in the pytest
  process, turning every rank's counts into record fields (compile: frames, graph breaks,
  recompiles; "compiled no frame" raises :class:`StepError`);
* :meth:`Effect.failure`: a case's exception explained (compile: "compile failed: ...").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..families.base import Built, Inputs
from ..mechanisms.base import FreezePlan, StepState, Uninstall
from ..spec import Case

__all__ = ["Effect", "ForwardLoss", "Loss", "StepError"]

Loss = Callable[[Any, Tensor], Tensor]
#: ``fn(model, loss, inputs, targets) -> loss value``: forward and loss of one step.
ForwardLoss = Callable[[nn.Module, Loss, Inputs, Tensor], Tensor]


class StepError(RuntimeError):
    """The step set-up cannot be measured (compile ran nothing, hit the recompile limit...)."""


class Effect:
    """What one axis's non-default value does to a workload (see the module docstring).
    Subclasses set ``name`` (the axis name) and ``doc`` and override the hooks they need."""

    name: str
    doc: str
    #: Wrapping order of :meth:`wrap_forward_loss`: lower wraps first (innermost).
    order: int = 0
    #: Whether the axis-twin pass times a case against its twin with this axis at its default
    #: (the step axes: yes; the adapter, a different model: no).
    twin: bool = True
    #: Untimed steps a case needs beyond the mechanism's before its steps are steady (compile:
    #: one, so that the last calibration step runs compiled code).
    calibration_steps: int = 0

    def skip_reason(self, case: Case) -> str | None:
        """Why ``case`` cannot run (a visible skip), where telling needs torch; or ``None``."""
        return None

    def scope(self, case: Case) -> contextlib.AbstractContextManager[object]:
        """A context around the whole case (every process that runs its steps enters it)."""
        return contextlib.nullcontext()

    def prepare_model(self, case: Case, built: Built) -> None:
        """Change the built model in place before its freeze plan is made."""

    def plan_type(self, case: Case) -> type[FreezePlan] | None:
        """The freeze plan's class, where this effect needs its own (``None``: no opinion)."""
        return None

    def optimizer_params(
        self, case: Case, plan: FreezePlan, params: list[nn.Parameter]
    ) -> list[nn.Parameter]:
        """The parameters the optimizer gets, from those the mechanism gives."""
        return params

    def install(self, case: Case, plan: FreezePlan) -> Uninstall | None:
        """Install wrappers on the model after the mechanism's; what removes them."""
        return None

    def wrap_forward_loss(
        self, case: Case, fn: ForwardLoss, device: torch.device, *, eager: bool
    ) -> ForwardLoss:
        """``fn`` (forward and loss) as this effect runs it; ``eager``: the callable the FLOP
        counter runs (no compiled code)."""
        return fn

    def new_state(self, case: Case, device: torch.device) -> Any:
        """Per-workload state handed to the step hooks below (``None`` by default)."""
        return None

    def scale(self, state: Any, loss: Tensor) -> Tensor:
        """The loss that backward runs on."""
        return loss

    def unscale(self, state: Any, optimizer: torch.optim.Optimizer) -> None:
        """Right after backward: the gradients back to their true values."""

    def after_backward(self, state: Any, step: StepState) -> None:
        """After backward and :meth:`unscale`, before the optimizer step."""

    def optimizer_step(self, state: Any, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimizer if this effect steps it (return ``True``); else ``False``."""
        return False

    def watch_start(self, case: Case) -> Any:
        """Start counting over the first steps; a token for :meth:`watch_stop` (``None``: this
        effect counts nothing)."""
        return None

    def watch_stop(self, token: Any) -> dict[str, Any]:
        """What was counted since :meth:`watch_start` (plain data: it crosses processes)."""
        return {}

    def watch_record(
        self, case: Case, ranks: Sequence[dict[str, Any]], extra_s: float | None
    ) -> dict[str, Any]:
        """Record fields from every rank's :meth:`watch_stop` (one in process) and the seconds
        the first steps took beyond a steady one (``None`` where not measured). Raises
        :class:`StepError` when the counts show the case cannot be measured."""
        return {}

    def failure(self, e: BaseException) -> str | None:
        """A one-line message for ``e`` where it is this effect's failure; else ``None``."""
        return None

    def __repr__(self) -> str:
        return f"<effect {self.name}>"
