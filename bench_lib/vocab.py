"""Axis vocabularies: the names of models, patterns, mechanisms and the other axes.

Plain data, read by both sides: the measuring side validates cases against it and keys its
registries by these names (a test keeps the registries and these tuples equal); the analysing
side orders and labels table rows with it, without importing torch.
"""

from __future__ import annotations

__all__ = [
    "ADAPTERS",
    "AMPS",
    "CHECKPOINTS",
    "COMPILES",
    "DEVICES",
    "DTYPES",
    "FROZEN_MODES",
    "GROUP_STOPS",
    "MECHANISMS",
    "MODELS",
    "NAMES_PATTERN",
    "OPTIMIZERS",
    "PARALLEL",
    "PARALLEL_DDP",
    "PATTERNS",
    "PATTERN_CHOICES",
    "SCENARIOS",
    "TRAP_MECHANISMS",
]

#: Built-in stacks, the transformers families (the ``models`` extra), and ``factory``: a model
#: built by the user's own function (``--bench-model-factory``).
MODELS: tuple[str, ...] = (
    "mlp",
    "transformer",
    "cnn",
    "xy",
    "resnet",
    "vit",
    "bert",
    "gpt2",
    "factory",
)
PATTERNS: tuple[str, ...] = (
    "none",
    "prefix",
    "suffix",
    "middle",
    "alternating",
    "all_but_head",
    "explicit",
)
#: The pattern that freezes parameters by name (``--bench-freeze`` globs), not blocks. It is
#: kept apart from :data:`PATTERNS`, whose every entry names blocks (from the block count, or
#: ``--bench-blocks``).
NAMES_PATTERN = "names"
#: Every value of a case's ``pattern``.
PATTERN_CHOICES: tuple[str, ...] = (*PATTERNS, NAMES_PATTERN)
#: Mechanism variants that are wrong in some setting, selectable to show their verdicts. A
#: report never recommends one of them, even where it happened to be valid.
TRAP_MECHANISMS: tuple[str, ...] = (
    "zeroed_grad_in_optimizer",
    "late_freeze",
    "inference_mode_nocopy",
)
#: The baseline's ``none``, the mechanisms people use on purpose, then the traps.
MECHANISMS: tuple[str, ...] = (
    "none",
    "no_grad",
    "inference_mode",
    "requires_grad",
    "optimizer_only",
    "backward_inputs",
    *TRAP_MECHANISMS,
)
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
DEVICES: tuple[str, ...] = ("cpu", "cuda")
DTYPES: tuple[str, ...] = ("float32", "bfloat16")
FROZEN_MODES: tuple[str, ...] = ("train", "eval")
SCENARIOS: tuple[str, ...] = ("sweep", "seed")

# Step variants and adapters: each axis's values, its default first. ``Case.baseline()`` keeps
# amp, compile and checkpoint (a case's ratio is against the same set-up with nothing frozen)
# and drops the adapter (the baseline is full fine-tuning of the same model).
AMPS: tuple[str, ...] = ("none", "bf16", "fp16")
COMPILES: tuple[str, ...] = ("off", "on")
CHECKPOINTS: tuple[str, ...] = ("off", "on")
ADAPTERS: tuple[str, ...] = ("none", "lora")
#: Data-parallel set-ups (``--bench-parallel``): ``none`` runs in the pytest process; every
#: other value runs the case on ``world`` worker processes through torch.distributed (gloo on
#: CPU, nccl on CUDA). ``fsdp`` is FSDP2 (``fully_shard``); ``fsdp1`` and ``fsdp1_orig_params``
#: are ``FullyShardedDataParallel`` with ``use_orig_params`` False and True.
PARALLEL: tuple[str, ...] = (
    "none",
    "ddp",
    "ddp_find_unused",
    "ddp_static",
    "fsdp",
    "fsdp1",
    "fsdp1_orig_params",
)
#: The DDP set-ups (their gradients are all-reduced in buckets: ``ddp_buckets``).
PARALLEL_DDP: tuple[str, ...] = ("ddp", "ddp_find_unused", "ddp_static")

#: Why a decision group's rounds stopped (the record's ``group_stop``), by key.
GROUP_STOPS: dict[str, str] = {
    "settled": "resolved, every needed pair clear of the margin's edges",
    "borderline": "resolved, a needed pair still across an edge when the cap was spent",
    "cap": "not resolved when its time cap was spent",
    "last_look": "the last look reached",
}
