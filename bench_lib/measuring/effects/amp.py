"""``amp`` ``bf16``/``fp16``: forward and loss run under ``torch.autocast(device_type, dtype)``;
parameters, gradients and optimizer state stay float32. ``fp16`` scales the loss with
``torch.amp.GradScaler`` and unscales the gradients right after backward (so that the gradients
a step leaves are the true ones: the validity check compares them), then steps through the
scaler."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ..families.base import Inputs
from ..spec import Case
from .base import Effect, ForwardLoss, Loss

__all__ = ["AMP", "AMP_DTYPES", "Amp", "amp_dtype", "autocast"]

#: The autocast dtype of each ``amp`` value.
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The ``amp`` values whose loss is scaled (``torch.amp.GradScaler``).
SCALED = ("fp16",)


def amp_dtype(case: Case) -> torch.dtype | None:
    """The autocast dtype of ``case`` (``None`` without autocast)."""
    return AMP_DTYPES.get(case.amp)


def autocast(case: Case, device_type: str) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` for ``case``'s ``amp`` on ``device_type`` (a null context for
    ``none``): the validity check runs its reference under it too."""
    dtype = amp_dtype(case)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


class Amp(Effect):
    name = "amp"
    doc = "forward and loss under torch.autocast; fp16 with torch.amp.GradScaler"

    def wrap_forward_loss(
        self, case: Case, fn: ForwardLoss, device: torch.device, *, eager: bool
    ) -> ForwardLoss:
        dtype = AMP_DTYPES[case.amp]
        device_type = device.type

        def autocast_forward_loss(
            model: nn.Module, loss: Loss, inputs: Inputs, targets: Tensor
        ) -> Tensor:
            with torch.autocast(device_type, dtype=dtype):
                return fn(model, loss, inputs, targets)

        return autocast_forward_loss

    def new_state(self, case: Case, device: torch.device) -> Any:
        return torch.amp.GradScaler(device.type) if case.amp in SCALED else None

    def scale(self, state: Any, loss: Tensor) -> Tensor:
        return loss if state is None else state.scale(loss)

    def unscale(self, state: Any, optimizer: torch.optim.Optimizer) -> None:
        if state is not None:
            state.unscale_(optimizer)

    def optimizer_step(self, state: Any, optimizer: torch.optim.Optimizer) -> bool:
        if state is None:
            return False
        state.step(optimizer)
        state.update()
        return True


AMP = Amp()
