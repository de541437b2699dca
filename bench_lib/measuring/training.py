"""Turn a :class:`~bench_lib.measuring.spec.Case` into a ready training step."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from . import devices
from .freezing import (
    Mechanism,
    frozen_parameters,
    get_mechanism,
    set_frozen_mode,
    trainable_parameters,
)
from .models import BlockModel, build_model
from .spec import Case

__all__ = ["Workload", "build_optimizer", "build_workload"]

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
    """A model, its freeze plan, optimizer and batch: everything one training step needs."""

    case: Case
    model: BlockModel
    mechanism: Mechanism
    frozen: frozenset[int]
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    inputs: Tensor
    targets: Tensor
    device: torch.device
    steps: int = field(default=0)

    @property
    def frozen_params(self) -> list[nn.Parameter]:
        """Parameters of the frozen blocks (whatever the mechanism does with them)."""
        return frozen_parameters(self.model, self.frozen)

    @property
    def trainable_intended(self) -> list[nn.Parameter]:
        """Parameters meant to train: unfrozen blocks and the head (whatever the optimizer got)."""
        return trainable_parameters(self.model, self.frozen)

    def forward_loss(self) -> Tensor:
        out = self.mechanism.forward(self.model, self.inputs, self.frozen)
        return self.model.loss(out, self.targets)

    def backward(self, loss: Tensor) -> None:
        self.mechanism.backward(loss, self.trainable)
        self.mechanism.after_backward(self)

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.steps += 1

    def step(self) -> None:
        """One full training step: zero_grad, forward, loss, backward, optimizer step, sync."""
        self.mechanism.zero_grad(self)
        self.backward(self.forward_loss())
        self.optimizer_step()
        devices.synchronize(self.device)


def build_workload(case: Case, *, batch_seed: int | None = None) -> Workload:
    """Build ``case``'s model, apply its mechanism and frozen mode, make optimizer and batch.

    Raises :class:`~bench_lib.devices.DeviceUnavailable` when the device is absent.
    """
    device = devices.resolve(case.device)
    devices.pin_threads(case.threads)
    model = build_model(case)
    frozen = frozenset(case.frozen_blocks)
    mechanism = get_mechanism(case.mechanism)
    trainable = mechanism.prepare(model, frozen)
    set_frozen_mode(model, frozen, case.frozen_mode)
    optimizer = build_optimizer(case.optimizer, trainable)
    x, y = model.make_batch(
        case.batch_size,
        seed=case.seed + 1 if batch_seed is None else batch_seed,
        device=device,
        dtype=getattr(torch, case.dtype),
    )
    return Workload(case, model, mechanism, frozen, trainable, optimizer, x, y, device)
