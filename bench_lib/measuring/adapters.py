"""LoRA adapters (peft) on the blocks a case's pattern leaves trainable.

A case with ``adapter='lora'`` builds its family's model as usual, then :func:`apply` puts a LoRA
adapter of rank ``lora_rank`` (``lora_alpha = 2 * rank``, no dropout, peft's initialisation: B
starts at zero) on the layers of every block the pattern leaves trainable, with peft's
``inject_adapter_in_model`` (for every family: it is what ``get_peft_model`` does to the modules,
without the ``PeftModel`` wrapper, so block names stay as the family gave them and the model's
own ``forward`` runs). Then:

* the adapted blocks' own parameters (the base weights, norms and biases included) stay frozen
  with ``requires_grad=False``, as peft left them: only the adapters train there;
* the blocks the pattern freezes get no adapter and are given back the state they had before
  peft (``requires_grad=True``), so that the case's mechanism freezes them its own way (peft
  marks every parameter but the adapters ``requires_grad=False``; without this step
  ``optimizer_only``, ``backward_inputs`` and ``no_grad`` would all be ``requires_grad``);
* everything outside the blocks (heads, poolers, final norms) trains fully, as without an
  adapter.

The layers adapted per family are :data:`TARGETS`. ``nn.MultiheadAttention`` reads
``out_proj.weight`` directly, so a LoRA on ``out_proj`` alone never runs and gets no gradient:
the attention module is adapted as a whole (peft's ``MultiheadAttention`` layer: one LoRA on
the packed q/k/v projection, one on ``out_proj``), and no child of an attention module is ever
a target of its own. That peft layer merges the adapters into the base weights before each
forward and subtracts them after it, re-registering the base weights: they move by rounding
every step, which the validity check reports (``frozen_param_moved``).

peft is an optional dependency (the ``models`` extra), imported only when a model is adapted.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import families
from .families.base import Block, Built
from .families.hf import INSTALL_HINT
from .mechanisms.base import FreezePlan
from .spec import Case, CaseError

__all__ = [
    "ALPHA_PER_RANK",
    "KINDS",
    "TARGETS",
    "AdaptedPlan",
    "adapter_param_count",
    "apply",
    "is_adapter_name",
    "peft_missing",
    "skip_reason",
    "target_names",
]

#: ``lora_alpha`` over the rank: the adapter's output is scaled by ``alpha / r = 2`` at every
#: rank.
ALPHA_PER_RANK = 2

#: The layer kinds LoRA can adapt here, as tests on a module.
KINDS: dict[str, Callable[[nn.Module], bool]] = {
    "attention": lambda m: isinstance(m, nn.MultiheadAttention),
    "linear": lambda m: isinstance(m, nn.Linear),
    "conv2d": lambda m: isinstance(m, nn.Conv2d),
    # transformers.pytorch_utils.Conv1D (GPT-2's projections), matched by name so that this
    # module does not import transformers; its weight is stored (in, out): fan_in_fan_out.
    "conv1d": lambda m: type(m).__name__ == "Conv1D",
}

#: The layer kinds adapted in each family's trainable blocks.
TARGETS: dict[str, tuple[str, ...]] = {
    "mlp": ("linear",),
    "transformer": ("attention", "linear"),
    "xy": ("attention", "linear"),
    "cnn": ("conv2d",),
    "resnet": ("conv2d",),
    "vit": ("linear",),
    "bert": ("linear",),
    "gpt2": ("conv1d",),
    "factory": ("attention", "linear", "conv2d"),
}


def peft_missing() -> str | None:
    """``None`` when peft can be imported, else the sentence that says how to get it."""
    try:
        found = importlib.util.find_spec("peft") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"peft is not installed (the models extra): {INSTALL_HINT}"


def is_adapter_name(name: str) -> bool:
    """Whether parameter ``name`` is an adapter tensor (peft's ``lora_A``/``lora_B``...)."""
    return any(part.startswith("lora_") for part in name.split("."))


def target_names(case: Case, model: nn.Module, blocks: Sequence[Block]) -> list[str]:
    """The submodule names LoRA adapts for ``case``: the layers of :data:`TARGETS`'s kinds in
    every block the pattern leaves trainable, in model order; never a child of an attention
    module (its own ``forward`` does not run)."""
    tests = [KINDS[k] for k in TARGETS[case.model]]
    frozen = set(case.frozen_blocks)
    names: dict[str, None] = {}
    for i, block in enumerate(blocks):
        if i in frozen:
            continue
        for root in block:
            inside: list[str] = []
            for name, module in model.get_submodule(root).named_modules(prefix=root):
                if any(name.startswith(f"{a}.") for a in inside):
                    continue
                if isinstance(module, nn.MultiheadAttention):
                    inside.append(name)
                if any(test(module) for test in tests):
                    names[name] = None
    return list(names)


def _no_targets(case: Case) -> str:
    kinds = ", ".join(TARGETS[case.model])
    return (
        f"LoRA on {case.model}: the blocks pattern {case.pattern!r} leaves trainable hold no "
        f"layer it adapts ({kinds})"
    )


def skip_reason(case: Case) -> str | None:
    """Why ``case``'s adapter cannot be applied here (a visible skip), or ``None``: peft is
    missing, the pattern freezes by name (adapters go on blocks), the trainable blocks of the
    model's skeleton hold no layer to adapt, or torch.compile meets peft's attention layer."""
    if case.adapter == "none":
        return None
    why = peft_missing()
    if why is not None:
        return why
    if case.pattern == "names":
        return (
            "pattern names freezes parameters by name, not blocks; adapters go on the blocks a "
            "pattern leaves trainable"
        )
    family = families.get_family(case.model)
    if family.unavailable() is not None:
        return None  # the family's own skip says why
    try:
        skeleton = families.build(case.baseline(), meta=True)
    except Exception:  # the case's own passes will fail and say why
        return None
    targets = target_names(case, skeleton.model, skeleton.blocks)
    if not targets:
        return _no_targets(case)
    if case.compile == "on" and any(
        isinstance(skeleton.model.get_submodule(n), nn.MultiheadAttention) for n in targets
    ):
        return (
            "torch.compile cannot compile peft's LoRA on nn.MultiheadAttention: the layer "
            "re-registers the base weights inside its forward (inductor raises on a set_ of a "
            "graph input)"
        )
    return None


def _peft() -> Any:
    why = peft_missing()
    if why is not None:
        raise ModuleNotFoundError(why)
    return importlib.import_module("peft")


def apply(case: Case, built: Built) -> None:
    """Put ``case``'s adapter on ``built.model`` in place (nothing for ``adapter='none'``) and
    give every parameter outside the adapted blocks back its ``requires_grad=True`` (see the
    module docstring). Raises :class:`CaseError` when there is no layer to adapt."""
    if case.adapter == "none":
        return
    model = built.model
    targets = target_names(case, model, built.blocks)
    if not targets:
        raise CaseError(_no_targets(case))
    peft = _peft()
    config = peft.LoraConfig(
        r=case.lora_rank,
        lora_alpha=ALPHA_PER_RANK * case.lora_rank,
        lora_dropout=0.0,
        bias="none",
        target_modules="|".join(re.escape(n) for n in targets),  # full names, fullmatch
        fan_in_fan_out="conv1d" in TARGETS[case.model],
    )
    peft.inject_adapter_in_model(config, model)
    plan = AdaptedPlan(model, built.blocks, frozenset(case.frozen_blocks))
    base = {n for n, _ in plan.base_params()}
    for name, p in model.named_parameters():
        if not is_adapter_name(name) and name not in base:
            p.requires_grad_(True)


@dataclass(frozen=True)
class AdaptedPlan(FreezePlan):
    """A freeze plan on a model with adapters: the frozen blocks are the pattern's (the
    mechanism's business); the adapted blocks' own parameters are base weights, frozen by peft;
    what trains is the adapters and everything outside the blocks.

    Base weights are told by name, never by identity: peft's attention layer re-registers its
    base weights (new parameter objects on the same storage) at every forward and at every
    ``named_modules()`` call, so each ``parameters()`` call returns new objects for them."""

    def adapter_params(self) -> list[nn.Parameter]:
        """The adapter tensors, in model order."""
        return [p for n, p in self.model.named_parameters() if is_adapter_name(n)]

    def _split(self) -> tuple[list[tuple[str, nn.Parameter]], list[nn.Parameter]]:
        """(base weights with their names, trainable parameters), from one walk of the model."""
        frozen = {id(p) for p in self.frozen_params()}
        roots = [
            f"{name}." for i, block in enumerate(self.blocks) if i not in self.frozen
            for name in block
        ]  # fmt: skip
        base: list[tuple[str, nn.Parameter]] = []
        trainable: list[nn.Parameter] = []
        for n, p in self.model.named_parameters():
            if id(p) in frozen:
                continue
            if not is_adapter_name(n) and any(n.startswith(r) for r in roots):
                base.append((n, p))
            else:
                trainable.append(p)
        return base, trainable

    def base_params(self) -> list[tuple[str, nn.Parameter]]:
        """The adapted (unfrozen) blocks' own parameters with their names: the base weights."""
        return self._split()[0]

    def trainable_params(self) -> list[nn.Parameter]:
        """The adapters and every parameter outside the blocks, in model order."""
        return self._split()[1]


def adapter_param_count(plan: FreezePlan) -> int | None:
    """Elements of the adapter tensors (what peft counts as trainable, less the head), or
    ``None`` for a plan without adapters."""
    if not isinstance(plan, AdaptedPlan):
        return None
    return sum(p.numel() for p in plan.adapter_params())
