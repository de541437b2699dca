"""The versioned record each benchmark writes into pytest-benchmark's ``extra_info``.

This module is the one place that names every field, its unit and when it is null. The README's
schema table is checked against :data:`FIELDS` by a test. Add fields freely; never rename one.
Bytes are bytes and times are seconds; values are scaled only when rendered. A value a device
cannot measure is ``None`` (JSON null), never 0. When a case fails (``status`` not ``ok``), every
measurement its failure prevented is null as well; ``status_message`` says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .axes import AXES
from .vocab import GROUP_STOPS

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Field",
    "RecordError",
    "make_record",
    "schema_markdown",
]

SCHEMA_VERSION = 2
STATUSES = ("ok", "oom", "error")


class RecordError(ValueError):
    """A record is missing fields or has fields the schema does not name."""


@dataclass(frozen=True)
class Field:
    unit: str
    doc: str
    null_when: str = ""


def _axis_fields() -> dict[str, Field]:
    """The identity entries: one per axis of the axis table (:mod:`bench_lib.axes`), with the
    axis's unit, description and values."""
    out: dict[str, Field] = {}
    for a in AXES.values():
        if a.name == "extra":  # recorded as seq_len, image_size and family_sizes
            continue
        doc = a.doc
        if a.kind == "choice":
            doc += ": " + ", ".join(f"`{v}`" for v in a.values)
        out[a.record_field] = Field(a.unit, doc, a.null_when)
    return out


FIELDS: dict[str, Field] = {
    "schema_version": Field("-", f"version of this schema (now {SCHEMA_VERSION})"),
    "case_id": Field("-", "the readable pytest id of the case"),
    **_axis_fields(),
    "n_blocks": Field(
        "blocks",
        "freezable blocks the patterns index: depth for the stacks, depth + 1 for resnet, vit, "
        "bert and gpt2 (block 0 is the embeddings or stem), the factory's own list",
        "a run before this field",
    ),
    "seq_len": Field(
        "tokens", "sequence length", "the family has no sequence (mlp, cnn, resnet, vit)"
    ),
    "image_size": Field(
        "pixels", "image side", "the family has no image (not cnn, resnet, vit, factory)"
    ),
    "family_sizes": Field(
        "mapping of int",
        "every size the family reads beside depth, width and batch, defaults included "
        "(seq_len, image_size, patch_size, vocab_size)",
        "a run before this field",
    ),
    "gc_enabled": Field("bool", "whether Python's garbage collector was enabled while timing"),
    "warmup_rounds": Field(
        "steps", "untimed steps before the group's rounds, plus the warm steps at each switch"
    ),
    "rounds": Field(
        "values",
        "timed values: one per round of the case's decision group, each the mean of the "
        "value's steps (4 or more: `timing_design` says how many; pytest-benchmark's rounds "
        "and stats.data, in seconds per step)",
    ),
    "status": Field("-", "`ok`, `oom` (out of memory) or `error`"),
    "status_message": Field("-", "the error message", "status is `ok`"),
    "peak_memory_bytes": Field(
        "bytes",
        "the workload's live state when a steady-state step starts plus the highest rise above "
        "it during the step (method in memory_method); nothing else alive on the device counts. "
        "A parallel case: the busiest rank's (see rank_peak_memory_bytes)",
    ),
    "foreign_bytes": Field(
        "bytes",
        "bytes alive on the device when the memory pass starts that are neither the workload's "
        "nor the library workspace: must be 0 (CUDA: allocator rounding; CPU: within 64 KiB, a "
        "lower bound that cannot see tensors only C++ holds)",
        "not measured (the case failed before its memory pass, or a run before schema 2)",
    ),
    "workspace_bytes": Field(
        "bytes",
        "memory libraries keep for good in the CUDA caching allocator (cuBLAS, cuDNN workspaces), "
        "measured once after the process warm-up; 0 on CPU",
        "not measured (a run before schema 2)",
    ),
    "peak_reserved_bytes": Field(
        "bytes", "peak bytes reserved by the CUDA caching allocator", "device is cpu"
    ),
    "memory_method": Field(
        "-", "`cuda_allocator` (torch.cuda peak stats) or `profiler_events` (CPU allocation events)"
    ),
    "rss_bytes": Field("bytes", "process resident set size after the memory pass (context only)"),
    "rank_peak_memory_bytes": Field(
        "list of bytes",
        "peak memory of each rank of a parallel case, rank 0 first (peak_memory_bytes is the "
        "largest): every tensor the worker process holds counts, and DDP's bucket buffers",
        "the case is not parallel, or failed before its memory pass",
    ),
    "comm_bytes": Field(
        "bytes",
        "payload bytes one rank passes to gradient collectives in one steady-state step, counted "
        "from the calls themselves: DDP's all-reduced buckets (a communication hook), FSDP's "
        "reduce-scatter inputs and all-reduces",
        "the case is not parallel, or failed before its communication pass",
    ),
    "ddp_buckets": Field(
        "buckets",
        "DDP gradient buckets all-reduced in one steady-state step",
        "the set-up is not DDP, or the case failed before its communication pass",
    ),
    "param_bytes": Field("bytes", "all parameters, frozen and trainable"),
    "grad_bytes": Field("bytes", "gradients held after backward (frozen ones included if any)"),
    "optimizer_state_bytes": Field("bytes", "optimizer state after one step"),
    "saved_activation_bytes": Field(
        "bytes",
        "tensors saved for backward in the forward pass, parameters excluded, storages once "
        "(autocast's weight copies excluded; a compiled case: what its compiled graph saves; "
        "checkpointing: the checkpointed blocks' inputs)",
    ),
    "autocast_weight_bytes": Field(
        "bytes",
        "low-precision copies of parameters that autocast made and backward keeps (saved "
        "tensors holding a parameter's elements cast to the autocast dtype); 0 without autocast",
        "not measured (the case failed before its memory pass, or a run before this field)",
    ),
    "trainable_params": Field(
        "elements",
        "parameters that should train (unfrozen blocks, head; with an adapter: the adapters and "
        "what is outside the blocks)",
    ),
    "frozen_params": Field(
        "elements",
        "parameters in frozen blocks, or matched by the globs (tied ones once); with an adapter "
        "not the adapted blocks' base weights",
    ),
    "adapter_params": Field(
        "elements",
        "elements of the adapter tensors (LoRA's A and B; peft's trainable count less the head)",
        "adapter is `none`, or the model could not be built",
    ),
    "frozen_param_names": Field(
        "tensors",
        "frozen parameter tensors as named by named_parameters(), each once (a tied one once)",
        "the model could not be built",
    ),
    "frozen_modules": Field(
        "list of module",
        "the modules a module-level mechanism (no_grad, inference_mode, inference_mode_nocopy) "
        "runs under its context: the frozen blocks' modules, or for `names` the largest "
        "submodules whose parameters all match",
        "the mechanism acts on parameters, or the model could not be built",
    ),
    "tied_frozen": Field(
        "tensors",
        "frozen parameters that a module outside the frozen ones uses too (tied weights: GPT-2's "
        "LM head is wte.weight), frozen with their block under every mechanism",
        "the model could not be built",
    ),
    "time_ratio": Field(
        "ratio",
        "case/baseline step time from the decision group's rounds: the Hodges-Lehmann estimate "
        "of the per-round ratios (the baseline: against an identical twin, the noise floor)",
        "the case was not timed",
    ),
    "time_ratio_ci_low": Field(
        "ratio", "lower end of that estimate's 95% distribution-free interval", "rounds < 6"
    ),
    "time_ratio_ci_high": Field("ratio", "upper end of that interval", "rounds < 6"),
    "ratio_pairs": Field("rounds", "rounds with a ratio to the baseline (the group's rounds)"),
    "ratio_samples": Field("list of ratio", "every round's case/baseline ratio, in order"),
    "pair_ratios": Field(
        "mapping of ratio",
        "this case's step time over every other member of its decision group (by mechanism; the "
        "baseline is `none`), each `{ratio, ci_low, ci_high, class}` from the same rounds; "
        "class is `equivalent` (interval inside 1 ± margin), `distinct` (excludes 1), `unresolved` "
        "(wider than the margin, holding 1) or `unknown`",
        "the case was not timed",
    ),
    "resolved": Field(
        "bool",
        "whether every needed pair of the group (its cheapest valid member against each other "
        "valid member) reached an interval at most `margin` wide before the group's time cap",
        "the case was not timed",
    ),
    "group_rounds": Field("rounds", "rounds the decision group ran", "the case was not timed"),
    "group_widest": Field(
        "fraction",
        "the widest needed pair's full interval width, (high - low) / ratio",
        "the case was not timed, or its group had no needed pair",
    ),
    "group_stop": Field(
        "-",
        "why the decision group stopped: "
        + "; ".join(f"`{k}`: {v}" for k, v in GROUP_STOPS.items())
        + " (chunks: each chunk's, comma-separated)",
        "the case was not timed",
    ),
    "group_borderline": Field(
        "count",
        "needed pairs whose interval still crossed an edge of the margin (1 - margin or "
        "1 + margin) when the group stopped: calls another run may make the other way",
        "the case was not timed",
    ),
    "group_members": Field(
        "list of -", "the mechanisms timed together in the group", "the case was not timed"
    ),
    "group_seconds": Field("s", "wall seconds of the group's timing", "the case was not timed"),
    "margin": Field(
        "fraction",
        "the decision margin: equivalent within 1 ± margin (--bench-margin; 5% on CPU, 2% on CUDA)",
        "the case was not timed",
    ),
    "timing_design": Field(
        "-",
        "how the group was timed: all members together or the baseline plus two at a time, the "
        "Williams order's seed, the value length, the warm steps, the looks and the cap",
        "the case was not timed",
    ),
    "axis_twin": Field(
        "-",
        "the step axes the case sets (`amp`, `compile`, `checkpoint`, joined by `+`): its axis "
        "twin is the same case with them at their defaults",
        "every step axis is at its default",
    ),
    "axis_twin_ratio": Field(
        "ratio",
        "median of case/axis-twin step-time ratios over interleaved pairs (as many as "
        "ratio_pairs): what the step axes cost or save on this case",
        "every step axis is at its default, or the case failed before this pass",
    ),
    "axis_twin_ratio_ci_low": Field(
        "ratio",
        "lower end of the 95% interval of that median",
        "axis_twin_ratio is null, or pairs < 6",
    ),
    "axis_twin_ratio_ci_high": Field(
        "ratio", "upper end of that interval", "axis_twin_ratio is null, or pairs < 6"
    ),
    "valid": Field(
        "bool",
        "the mechanism is correct for the pattern (verdict is `ok`, or `rounding_drift`: valid "
        "with a caveat)",
    ),
    "verdict": Field(
        "-",
        "`ok`, `graph_cut`, `frozen_param_moved`, `frozen_buffer_changed`, `grad_mismatch`, "
        "`rounding_drift` (frozen parameters moved by the forward's rounding only, e.g. peft's "
        "LoRA on nn.MultiheadAttention merging and unmerging) or `error` (see "
        "bench_lib/measuring/verify.py)",
    ),
    "verdict_detail": Field("-", "one sentence with the numbers behind the verdict"),
    "verdict_steps": Field("steps", "optimizer steps the validity check ran"),
    "grad_rtol": Field("ratio", "relative L2 tolerance of the gradient comparison"),
    "block_flow": Field(
        "list of code",
        "what backward did to each block of the family, in block order, measured in the validity "
        "check's eager re-run of its steps: `wx` (weights got gradients and a gradient reached "
        "the block's input activation), `w` (weights only; block 0, fed the data, never has x), "
        "`x` (input gradient only), `none` (not in the graph), `starved` (trainable, got no "
        "gradient), `moved` (frozen, its parameters moved), `buffers` (its buffers changed), "
        "`drift` (rounding drift)",
        "the verdict is `error`, the case is parallel (not measured on the workers), or a run "
        "before this field",
    ),
    "frozen_drift_per_step": Field(
        "value",
        "largest change of a frozen parameter that moved by rounding drift only, in one step "
        "(max abs over elements and steps): it accumulates over training",
        "no frozen parameter drifted (no `drift` in block_flow), or a run before this field",
    ),
    "flops_forward": Field(
        "FLOPs", "forward pass and loss of one step (FlopCounterMode)", "the step did not run"
    ),
    "flops_backward": Field("FLOPs", "backward pass of one step", "the step did not run"),
    "flops_ratio": Field(
        "ratio", "step FLOPs over the baseline's step FLOPs", "either FLOP count is missing or 0"
    ),
    "flops_uncounted_ops": Field(
        "list of op", "costly operators (by name) with no FLOP formula: the count misses them"
    ),
    "forward_s": Field("s", "median forward (with loss) time, instrumented pass", "not run"),
    "backward_s": Field("s", "median backward time, instrumented pass", "not run"),
    "optimizer_s": Field("s", "median optimizer-step time, instrumented pass", "not run"),
    "phase_reps": Field("steps", "steps of the instrumented phase pass", "not run"),
    "compile_s": Field(
        "s",
        "how much longer the case's first steps took than a steady step (dynamo, AOTAutograd, "
        "inductor), outside the timed rounds; the validity check compiled the same function on "
        "its own model just before, so inductor's caches are warm",
        "compile is `off`, or the case failed before its timed rounds",
    ),
    "compiled_frames": Field(
        "frames",
        "frames dynamo compiled during the case's first steps and timed rounds (growth of "
        "counters['frames']['ok']; recompiles and frames after graph breaks included); 0 is an "
        "error",
        "compile is `off`, or the case failed before its timed rounds",
    ),
    "graph_breaks": Field(
        "breaks",
        "graph breaks in that window (growth of the sum of counters['graph_break'])",
        "compile is `off`, or the case failed before its timed rounds",
    ),
    "recompiles": Field(
        "compiles",
        "compiles of a frame compiled before in that window (dynamo compile ids `frame/n` with "
        "n > 0, from torch._dynamo.callback's start callbacks: torch has no recompile counter); "
        "hitting dynamo's recompile limit is an error",
        "compile is `off`, or the case failed before its timed rounds",
    ),
    "pass_seconds": Field(
        "mapping of s",
        "wall seconds of each pass of the case (launch of the workers of a parallel case, "
        "validity, build, calibration, timed, ratio_pairs, flops, phases, memory, comm, stop): "
        "where a case's time goes",
    ),
}


def make_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A record with exactly the :data:`FIELDS` keys, in schema order.

    ``schema_version`` is set to this writer's version. Raises :class:`RecordError` naming
    missing or unknown keys.
    """
    given = {**values, "schema_version": SCHEMA_VERSION}
    missing = [k for k in FIELDS if k not in given]
    unknown = [k for k in given if k not in FIELDS]
    if missing or unknown:
        raise RecordError(f"record fields missing: {missing}; unknown: {unknown}")
    if given["status"] not in STATUSES:
        raise RecordError(f"status={given['status']!r} is not one of: {', '.join(STATUSES)}")
    return {k: given[k] for k in FIELDS}


def schema_markdown() -> str:
    """The schema as a markdown table (the README embeds it; a test keeps the two equal)."""
    lines = ["| key | unit | meaning | null when |", "| --- | --- | --- | --- |"]
    for name, f in FIELDS.items():
        lines.append(f"| `{name}` | {f.unit} | {f.doc} | {f.null_when or '-'} |")
    return "\n".join(lines)
