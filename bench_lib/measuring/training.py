"""Turn a :class:`~bench_lib.measuring.spec.Case` into a ready training step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import devices, effects, families
from .effects import StepEffects
from .families.base import Built, Inputs, inputs_to
from .mechanisms import REGISTRY as MECHANISMS
from .mechanisms import FreezePlan, Mechanism
from .mechanisms.base import Uninstall
from .spec import Case

__all__ = [
    "Workload",
    "build_optimizer",
    "build_workload",
    "freeze_plan",
    "freeze_summary",
    "prepare",
    "skeleton",
]

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-2
MOMENTUM = 0.9


def build_optimizer(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``adamw`` (lr 1e-3, weight decay 1e-2) or ``sgd`` (lr 1e-3, momentum 0.9, weight decay 1e-2).

    Everything else is torch's default, as users get it (a per-parameter loop on CPU, the
    ``foreach`` implementation on CUDA).
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
    raise ValueError(f"optimizer={name!r} is not one of: adamw, sgd")


@dataclass
class Workload:
    """A model, its freeze plan, optimizer and batch: everything one training step needs.

    ``uninstall`` removes the mechanism's wrappers and the effects' (checkpointing) from the
    model (a workload that ends with its model needs no call to it). ``effects`` runs the
    case's active step-axis effects around the step (autocast, torch.compile, loss scaling; see
    :mod:`.effects`). ``wrapper`` is the module the step calls where it
    is not the model itself: a data-parallel wrapper (DDP, FSDP1's root) of a worker's workload.
    """

    case: Case
    built: Built
    plan: FreezePlan
    mechanism: Mechanism
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    inputs: Inputs
    targets: Tensor
    device: torch.device
    uninstall: Uninstall
    steps: int = field(default=0)
    wrapper: nn.Module | None = None
    effects: StepEffects = field(kw_only=True)

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def frozen(self) -> frozenset[int]:
        return self.plan.frozen

    @property
    def frozen_params(self) -> list[nn.Parameter]:
        """Parameters of the frozen blocks (whatever the mechanism does with them)."""
        return self.plan.frozen_params()

    @property
    def trainable_intended(self) -> list[nn.Parameter]:
        """Parameters meant to train: all but the frozen blocks' (whatever the optimizer got)."""
        return self.plan.trainable_params()

    def make_batch(self, seed: int) -> tuple[Inputs, Tensor]:
        """The family's batch drawn with ``seed``, on the device (float inputs in the dtype)."""
        return _batch(self.built, seed, self.device)

    def forward_loss(self, *, eager: bool = False) -> Tensor:
        """Forward and loss under the step axes (``eager``: without torch.compile), through the
        data-parallel wrapper where there is one."""
        module = self.model if self.wrapper is None else self.wrapper
        return self.effects.forward_loss(
            module, self.built.loss, self.inputs, self.targets, eager=eager
        )

    def backward(self, loss: Tensor) -> None:
        self.mechanism.backward(self.effects.scale(loss), self.trainable)
        self.mechanism.after_backward(self)
        self.effects.after_backward(self.optimizer, self)

    def optimizer_step(self) -> None:
        self.effects.optimizer_step(self.optimizer)
        self.steps += 1

    def step(self) -> None:
        """One full training step: zero_grad, forward, loss, backward, optimizer step, sync."""
        self.mechanism.zero_grad(self)
        self.backward(self.forward_loss())
        self.optimizer_step()
        devices.synchronize(self.device)


def _batch(built: Built, seed: int, device: torch.device) -> tuple[Inputs, Tensor]:
    inputs, targets = built.make_batch(torch.Generator().manual_seed(seed))
    return inputs_to(inputs, device, getattr(torch, built.case.dtype)), targets.to(device)


def freeze_plan(case: Case, built: Built) -> FreezePlan:
    """``case``'s freeze plan on ``built``: its frozen blocks, or its ``--bench-freeze`` globs;
    of the class its effects ask for (with an adapter, an :class:`~.adapters.AdaptedPlan`:
    what trains is the adapters and what is outside the blocks)."""
    plan_type = effects.plan_type(case)
    return plan_type(built.model, built.blocks, frozenset(case.frozen_blocks), case.freeze)


def skeleton(case: Case) -> Built:
    """``case``'s model and blocks on the meta device (no storage; built anew at each call and
    kept by nobody, so that nothing of a case outlives it)."""
    return families.build(case.baseline(), meta=True)


def freeze_summary(case: Case) -> dict[str, Any]:
    """What ``case`` freezes, read from its model's skeleton on the meta device (no storage, no
    seeding): the record fields ``n_blocks``, ``frozen_param_names`` (frozen parameter tensors,
    a tied one once), ``frozen_modules`` (the module names a module-level mechanism wraps, else
    ``None``) and ``tied_frozen`` (frozen parameters a module outside the frozen ones uses too).
    Values that cannot be had (the model does not build) are ``None``; never raises."""
    out: dict[str, Any] = dict.fromkeys(("frozen_param_names", "frozen_modules", "tied_frozen"))
    try:
        out["n_blocks"] = case.n_blocks
        plan = freeze_plan(case, skeleton(case))
        out["frozen_param_names"] = len(plan.frozen_params())
        out["tied_frozen"] = plan.tied_frozen()
        if MECHANISMS.lookup(case.mechanism).module_level:
            out["frozen_modules"] = [name for name, _ in plan.frozen_modules()]
    except Exception:  # the case's own passes will fail and say why
        out.setdefault("n_blocks", None)
    return out


def build_workload(case: Case, *, batch_seed: int | None = None) -> Workload:
    """Build ``case``'s model, apply its mechanism and frozen mode, make optimizer and batch
    (drawn with ``batch_seed``, by default ``case.seed + 1``).

    Raises :class:`~bench_lib.devices.DeviceUnavailable` when the device is absent.
    """
    device = devices.resolve(case.device)
    devices.pin_threads(case.threads)
    built, plan, mechanism, trainable, uninstall = prepare(case)
    optimizer = build_optimizer(case.optimizer, trainable)
    x, y = _batch(built, case.seed + 1 if batch_seed is None else batch_seed, device)
    step_effects = StepEffects(case, device)
    return Workload(
        case,
        built,
        plan,
        mechanism,
        trainable,
        optimizer,
        x,
        y,
        device,
        uninstall,
        effects=step_effects,
    )


def prepare(case: Case) -> tuple[Built, FreezePlan, Mechanism, list[nn.Parameter], Uninstall]:
    """What every workload of ``case`` starts from, in this process and in a worker alike: the
    model built, the effects' changes to it (LoRA), the freeze plan, the mechanism's flags and
    wrappers, the effects' wrappers after them (checkpointing), the frozen blocks' mode; with
    the parameters the optimizer gets and what removes every wrapper."""
    built = families.build(case)
    effects.prepare_model(case, built)
    plan = freeze_plan(case, built)
    mechanism = MECHANISMS.lookup(case.mechanism)
    trainable = effects.optimizer_params(case, plan, mechanism.prepare(plan))
    uninstall = effects.install(case, plan, mechanism.install(plan))
    plan.set_mode(case.frozen_mode)
    return built, plan, mechanism, trainable, uninstall
