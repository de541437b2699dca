"""Step axes (amp, compile, checkpoint) and the adapter axis: what cannot run together.

The values and defaults are plain data in :mod:`bench_lib.vocab`; the Case fields, id fragments
and what ``Case.baseline()`` keeps live in :mod:`.spec`. This module holds the combinations
that cannot run, each a rule that returns the reason (a visible skip), so that an axis adds its
rules here and the sweep asks one function. Profiles never cross these axes: each gets grids
of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from . import adapters
from .spec import Case

__all__ = ["SKIP_RULES", "skip_reason"]


def _amp_with_low_precision(case: Case) -> str | None:
    if case.amp != "none" and case.dtype != "float32":
        return (
            f"--bench-amp {case.amp} autocasts a float32 model; with --bench-dtype {case.dtype} "
            "the whole model is already cast, a different set-up"
        )
    return None


def _fp16_needs_cuda(case: Case) -> str | None:
    if case.amp == "fp16" and case.device != "cuda":
        return "--bench-amp fp16 (autocast with torch.amp.GradScaler) runs on CUDA only"
    return None


def _checkpoint_needs_trainable_blocks(case: Case) -> str | None:
    if case.checkpoint == "on" and case.pattern == "all_but_head":
        return (
            "--bench-checkpoint on checkpoints the blocks the pattern leaves trainable; "
            "all_but_head leaves none (the same step as without it)"
        )
    return None


def _lora_needs_trainable_blocks(case: Case) -> str | None:
    if case.adapter != "none" and case.pattern == "all_but_head":
        return "pattern all_but_head with an adapter leaves no block to adapt"
    return None


#: Every rule, in order; the first reason wins.
SKIP_RULES: list[Callable[[Case], str | None]] = [
    _amp_with_low_precision,
    _fp16_needs_cuda,
    _checkpoint_needs_trainable_blocks,
    _lora_needs_trainable_blocks,
    # peft installed, a block pattern, and a layer to adapt in the trainable blocks.
    adapters.skip_reason,
]


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot run, or ``None``."""
    for rule in SKIP_RULES:
        reason = rule(case)
        if reason is not None:
            return reason
    return None
