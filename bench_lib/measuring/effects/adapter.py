"""``adapter`` ``lora``: peft's LoRA on the layers of the blocks a case's pattern leaves
trainable (the peft side is :mod:`bench_lib.measuring.adapters`). The adapter is injected into
the built model before its freeze plan is made; the plan is an
:class:`~bench_lib.measuring.adapters.AdaptedPlan` (what trains is the adapters and what is
outside the blocks), and the base weights peft froze never reach the optimizer. The baseline of
an adapted case is full fine-tuning of the same model, so the axis has no axis twin."""

from __future__ import annotations

from torch import nn

from .. import adapters
from ..families.base import Built
from ..mechanisms.base import FreezePlan
from ..spec import Case
from .base import Effect

__all__ = ["ADAPTER", "Adapter"]


class Adapter(Effect):
    name = "adapter"
    doc = "peft LoRA adapters on the trainable blocks' layers; their base weights frozen by peft"
    twin = False

    def skip_reason(self, case: Case) -> str | None:
        return adapters.skip_reason(case)

    def prepare_model(self, case: Case, built: Built) -> None:
        adapters.apply(case, built)

    def plan_type(self, case: Case) -> type[FreezePlan]:
        return adapters.AdaptedPlan

    def optimizer_params(
        self, case: Case, plan: FreezePlan, params: list[nn.Parameter]
    ) -> list[nn.Parameter]:
        return [p for p in params if p.requires_grad]  # base weights (frozen by peft) never do


ADAPTER = Adapter()
