"""Validity verdicts: is a mechanism correct for its pattern?

A short deterministic check, outside any timed loop: a fresh workload of the case runs a few
optimizer steps on different seeded batches. Before each step a *reference* (the same family
built for the baseline case, without wrappers, loaded with the case's current parameters and
buffers, nothing frozen, same train/eval modes, called through the model's own forward)
computes the gradients that the parameters meant to train should receive. Then the case's own
step runs and is compared with it:

* ``graph_cut``: a parameter meant to train got no gradient (``None`` or all zeros where the
  reference has a non-zero one);
* ``frozen_param_moved``: a frozen parameter is not bit-identical after the step;
* ``frozen_buffer_changed``: a buffer of a frozen block changed (BatchNorm running statistics
  in train mode);
* ``grad_mismatch``: a trainable gradient differs from the reference beyond the tolerance (or,
  in a data-parallel case whose ranks hold replicas, the ranks' gradients differ);
* ``error``: the mechanism raised;
* ``ok``: none of these.

When several apply, the verdict is the first in that order (after ``error``) and the detail
names the others. Tolerance: relative L2 error ``||g - g_ref|| / ||g_ref||`` at most
``GRAD_RTOL[dtype]``. Differences below it are reported as rounding only (eval mode switches
some modules to fused fast paths that round differently).

Step axes (:mod:`.variants`): the reference runs under the case's autocast (eager, without
checkpointing), so that a mechanism is judged against the gradients *this* set-up gives, not
against float32; the tolerance is then the autocast dtype's (:func:`tolerance`), because
compiled kernels and fused paths round low-precision intermediates differently from eager ones.
Checkpointing recomputes the same forward and needs no allowance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from . import adapters, families
from .devices import DeviceUnavailable
from .families.base import Built, Inputs, call_model
from .mechanisms import FreezePlan
from .spec import Case
from .training import Workload, build_workload, freeze_plan
from .variants import autocast, compile_errors

__all__ = [
    "BATCH_SEED",
    "CHECK_STEPS",
    "GRAD_RTOL",
    "VERDICTS",
    "Findings",
    "Subject",
    "Verdict",
    "check_case",
    "rel_err",
    "tolerance",
    "verdict",
]

VERDICTS = (
    "ok",
    "graph_cut",
    "frozen_param_moved",
    "frozen_buffer_changed",
    "grad_mismatch",
    "error",
)
CHECK_STEPS = 3
GRAD_RTOL = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}
#: The dtype whose tolerance an autocast case gets.
_AMP_RTOL_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
#: Seed of the check's first batch (step k draws with ``BATCH_SEED + k``).
BATCH_SEED = 1000


@dataclass(frozen=True)
class Verdict:
    verdict: str
    detail: str

    @property
    def valid(self) -> bool:
        return self.verdict == "ok"


def _where(plan: FreezePlan, params: Sequence[nn.Parameter]) -> str:
    """Which blocks (by index in the family's block list) ``params`` belong to."""
    index = plan.block_index()
    blocks = sorted({index[id(p)] for p in params if id(p) in index})
    parts = (
        [f"block{'s' if len(blocks) > 1 else ''} {', '.join(map(str, blocks))}"] if blocks else []
    )
    if any(id(p) not in index for p in params):
        parts.append("outside the blocks (head)")
    return " and ".join(parts)


def rel_err(g: Tensor, ref: Tensor) -> float:
    """``||g - ref|| / ||ref||`` in float32 (``||g - ref||`` where ``ref`` is 0)."""
    diff = float(torch.linalg.vector_norm(g.float() - ref.float()))
    norm = float(torch.linalg.vector_norm(ref.float()))
    return diff / norm if norm > 0 else diff


def _reference(case: Case) -> Built:
    """The reference model: the baseline's, in the case's train/eval modes; with an adapter,
    the same adapted model with the frozen blocks under ``requires_grad``."""
    if case.adapter != "none":
        ref_case = (
            case if case.pattern == "none" else dataclasses.replace(case, mechanism="requires_grad")
        )
        return build_workload(ref_case).built
    ref = families.build(case.baseline())
    freeze_plan(case, ref).set_mode(case.frozen_mode)
    return ref


def _reference_grads(
    ref: Built, w: Workload, intended: Sequence[nn.Parameter], x: Inputs, y: Tensor
) -> list[Tensor | None]:
    ref.model.load_state_dict(w.model.state_dict())
    ref.model.zero_grad(set_to_none=True)
    with autocast(w.case, w.device.type):  # the case's own autocast (none: a null context)
        loss = ref.loss(call_model(ref.model, x), y)
    loss.backward()
    # Map by name: the reference has the case's parameter names (peft's attention layer
    # re-registers its base weights at each forward, which changes their order, not names).
    grads = {n: p.grad for n, p in ref.model.named_parameters()}
    names = {id(p): n for n, p in w.model.named_parameters()}
    return [grads[names[id(p)]] for p in intended]


@dataclass
class Findings:
    """What the check saw, over its steps (and, for a parallel case, over every rank)."""

    cut: set[int] = field(default_factory=set)  # indices into trainable_intended
    moved: dict[str, float] = field(default_factory=dict)
    buffers: dict[str, float] = field(default_factory=dict)
    counters: set[str] = field(default_factory=set)  # integer buffers (num_batches_tracked)
    mismatch: float = 0.0
    rounding: float = 0.0
    #: Steps after which the ranks of a replicated (DDP) case held different gradients.
    disagree: int = 0
    #: Adapted blocks' base weights that moved, by name, and the adapter tensors (indices into
    #: trainable_intended) that got a non-zero gradient.
    base_moved: dict[str, float] = field(default_factory=dict)
    adapter_grads: set[int] = field(default_factory=set)

    def merge(self, other: Findings) -> None:
        """Add ``other``'s findings (another rank's) to these."""
        self.cut |= other.cut
        for mine, theirs in (
            (self.moved, other.moved),
            (self.buffers, other.buffers),
            (self.base_moved, other.base_moved),
        ):
            for n, v in theirs.items():
                mine[n] = max(mine.get(n, 0.0), v)
        self.counters |= other.counters
        self.adapter_grads |= other.adapter_grads
        self.mismatch = max(self.mismatch, other.mismatch)
        self.rounding = max(self.rounding, other.rounding)
        self.disagree = max(self.disagree, other.disagree)


def tolerance(case: Case) -> float:
    """The relative L2 tolerance of ``case``'s gradient comparison: its dtype's, or under
    autocast the autocast dtype's where that is looser, twice that when compiled too (inductor
    keeps low-precision intermediates in float32 inside fused kernels: compiled bf16 against
    eager bf16 differed by up to 0.057 on a width-16 transformer, as much as eager bf16 differs
    from float32, 0.035-0.04)."""
    amp = _AMP_RTOL_DTYPE.get(case.amp)
    if amp is None:
        return GRAD_RTOL[case.dtype]
    return max(GRAD_RTOL[case.dtype], GRAD_RTOL[amp] * (2 if case.compile == "on" else 1))


class Subject(Protocol):
    """What a verdict names: the model, its freeze plan and the parameters meant to train."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def plan(self) -> FreezePlan: ...

    @property
    def trainable_intended(self) -> list[nn.Parameter]: ...


def check_case(case: Case, steps: int = CHECK_STEPS) -> Verdict:
    """Run the validity check for ``case`` (deterministic: fixed seeds, fresh models).

    A mechanism that raises gets the verdict ``error``; an absent device
    (:class:`~bench_lib.devices.DeviceUnavailable`), out-of-memory errors and compile failures
    (:func:`~.variants.compile_errors`) propagate, since they say nothing about the mechanism.
    """
    try:
        return _check(case, steps)
    except (DeviceUnavailable, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:  # the mechanism raised: that is the finding
        if case.compile == "on" and isinstance(e, compile_errors()):
            raise  # the compile failed, not the mechanism
        return Verdict("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _check(case: Case, steps: int) -> Verdict:
    w = build_workload(case)
    for _ in range(w.mechanism.warm_steps):
        w.step()
    ref = _reference(case)
    intended = w.trainable_intended
    base = {n: p.detach().clone() for n, p in _base_weights(w)}
    adapter_ids = {id(p) for p in _adapter_params(w)}
    frozen_ids = {id(p) for p in w.frozen_params}
    frozen_named = {n: p for n, p in w.model.named_parameters() if id(p) in frozen_ids}
    frozen_bufs = dict(w.plan.frozen_buffers())
    tol = tolerance(case)
    f = Findings()
    for k in range(steps):
        x, y = w.make_batch(BATCH_SEED + k)
        w.inputs, w.targets = x, y
        expected = _reference_grads(ref, w, intended, x, y)
        before_p = {n: p.detach().clone() for n, p in frozen_named.items()}
        before_b = {n: b.detach().clone() for n, b in frozen_bufs.items()}
        w.mechanism.zero_grad(w)
        w.backward(w.forward_loss())
        for j, (p, ref_g) in enumerate(zip(intended, expected, strict=True)):
            if id(p) in adapter_ids and p.grad is not None and bool(p.grad.any()):
                f.adapter_grads.add(id(p))
            if ref_g is None or not bool(ref_g.any()):
                continue
            if p.grad is None or not bool(p.grad.any()):
                f.cut.add(j)
                continue
            err = rel_err(p.grad, ref_g)
            if err > tol:
                f.mismatch = max(f.mismatch, err)
            else:
                f.rounding = max(f.rounding, err)
        w.optimizer_step()
        for n, p in frozen_named.items():
            if not torch.equal(p.detach(), before_p[n]):
                f.moved[n] = max(f.moved.get(n, 0.0), float((p.detach() - before_p[n]).abs().max()))
        for n, b in frozen_bufs.items():
            if not torch.equal(b, before_b[n]):
                diff = (b.float() - before_b[n].float()).abs().max()
                f.buffers[n] = max(f.buffers.get(n, 0.0), float(diff))
                if not b.is_floating_point():
                    f.counters.add(n)
        for n, p in _base_weights(w):  # by name: peft may have re-registered them
            if not torch.equal(p.detach(), base[n]):
                change = float((p.detach().float() - base[n].float()).abs().max())
                f.base_moved[n] = max(f.base_moved.get(n, 0.0), change)
    # peft starts every B at zero, so no A gets a gradient on the first step: an adapter tensor
    # is cut off only if it got none in all the steps.
    f.cut |= {j for j, p in enumerate(intended) if id(p) in adapter_ids - f.adapter_grads}
    return verdict(w, f, tol, steps)


def _base_weights(w: Workload) -> list[tuple[str, nn.Parameter]]:
    """The adapted blocks' own parameters (none without an adapter)."""
    return w.plan.base_params() if isinstance(w.plan, adapters.AdaptedPlan) else []


def _adapter_params(w: Workload) -> list[nn.Parameter]:
    """The adapter tensors of ``w``'s model (none without an adapter)."""
    return w.plan.adapter_params() if isinstance(w.plan, adapters.AdaptedPlan) else []


def verdict(w: Subject, f: Findings, tol: float, steps: int) -> Verdict:
    """The verdict of findings ``f`` over ``steps`` steps of ``w`` (see the module docstring)."""
    intended = w.trainable_intended
    parts: list[tuple[str, str]] = []
    if f.cut:
        cut = [intended[j] for j in sorted(f.cut)]
        where = _where(w.plan, cut)
        n_el = sum(p.numel() for p in cut)
        parts.append(
            (
                "graph_cut",
                f"{len(cut)} of {len(intended)} trainable parameter tensors ({n_el:,} elements, "
                f"{where}) received no gradient",
            )
        )
    if f.moved:
        n_el = sum(p.numel() for n, p in w.model.named_parameters() if n in f.moved)
        parts.append(
            (
                "frozen_param_moved",
                f"{len(f.moved)} frozen parameter tensors ({n_el:,} elements) moved in "
                f"{steps} steps, "
                f"max |change| {max(f.moved.values()):.3g}",
            )
        )
    if f.base_moved:
        names = sorted(f.base_moved)
        parts.append(
            (
                "frozen_param_moved",
                f"{len(names)} base weights of the adapted blocks changed in {steps} steps "
                f"({', '.join(names[:2])}{', ...' if len(names) > 2 else ''}), max |change| "
                f"{max(f.base_moved.values()):.3g}",
            )
        )
    if f.buffers:
        # Report the float buffers' drift (running statistics); a counter such as
        # num_batches_tracked always moves by whole steps and says nothing about magnitude.
        stats = {n: v for n, v in f.buffers.items() if n not in f.counters}
        names = sorted(stats) or sorted(f.buffers)
        drift = (
            f"running statistics moved by up to {max(stats.values()):.3g}"
            if stats
            else "counters only"
        )
        parts.append(
            (
                "frozen_buffer_changed",
                f"{len(f.buffers)} buffers of frozen blocks changed "
                f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}), {drift}",
            )
        )
    if f.disagree:
        parts.append(
            (
                "grad_mismatch",
                f"the ranks' gradients differ after their all-reduce in {f.disagree} of {steps} "
                "steps",
            )
        )
    if f.mismatch:
        parts.append(
            (
                "grad_mismatch",
                f"trainable gradients differ from the reference: max relative error "
                f"{f.mismatch:.3g} > tolerance {tol:g}",
            )
        )
    if not parts:
        note = (
            f"; gradients differ by rounding only (max relative error {f.rounding:.2g} "
            f"<= tolerance {tol:g})"
            if f.rounding > 0
            else "; gradients match the reference exactly"
        )
        return Verdict(
            "ok",
            f"{len(intended)} trainable tensors got the reference gradients and frozen "
            f"parameters and buffers stayed bit-identical over {steps} steps{note}",
        )
    return Verdict(parts[0][0], "; ".join(d for _, d in parts))
