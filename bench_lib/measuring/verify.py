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
* ``rounding_drift`` (valid, with a caveat): frozen parameters moved, but by the rounding of
  the forward pass only (see below);
* ``error``: the mechanism raised;
* ``ok``: none of these.

When several apply, the verdict is the first in that order (after ``error``) and the detail
names the others.

**Rounding drift.** A frozen parameter (never a buffer) that moved counts as drift, not as
``frozen_param_moved``, only when all three hold:

(a) it is in no optimizer (by identity or storage) and its ``grad`` is ``None`` after every
    step's backward: nothing but the forward can have moved it;
(b) re-running each step from the state before it, forward and backward *without*
    ``optimizer.step()``, gives it the very same values (bit for bit) as the real step did;
(c) each step moved each element by at most ``k = DRIFT_ULPS_PER_FORWARD`` units in the last
    place of ``|w| + |dW|`` per forward of the step, where ``w`` is its value before the step
    and ``dW`` the adapter's contribution to it at that step (peft LoRA: ``lora_B @ lora_A *
    scaling``, :func:`adapter_deltas`; 0 for a parameter no adapter covers). A step runs one
    forward, two for a checkpointed block (its forward is recomputed in backward).

Why ``k = 4``: merging and unmerging is ``fl(fl(w + dW) - dW)``, two roundings to nearest of
values no larger than ``|w| + |dW|`` in magnitude, at most half an ulp each: 1 ulp. peft's
``MultiheadAttention`` layer (0.21) adds the out-projection's delta twice (once itself, once
through its out_proj LoRA layer) and subtracts it twice: four roundings of values up to
``|w| + 2|dW| <= 2(|w| + |dW|)`` whose ulp is at most twice ours, so at most
``4 * 1/2 * 2 = 4`` ulp. An optimizer moving a frozen weight by a tiny amount (AdamW's weight
decay at a small learning rate) fails (a) and (b) whatever its size. The largest per-step
change of the drifting parameters is recorded (``frozen_drift_per_step``): it accumulates over
training.

**Per-block backward flow** (``block_flow``, one code per block of the family, in block order):
measured in each step's re-run above, which is eager (never compiled) and runs with forward
pre-hooks on each block's modules that put a ``Tensor.register_hook`` on every floating-point
input activation that requires grad (not ``register_full_backward_hook``, which breaks on
in-place ops, tuple outputs and compile). A block's *input* is every tensor argument of its
modules that no module of the same block produced; the hooks fire during backward only, and a
checkpointed block's recomputation (inside backward) is ignored, so it counts once. Two bits,
OR-ed over the steps:

* ``w``: some parameter of the block got a gradient (``grad`` not ``None`` after backward);
* ``x``: a gradient reached the block's input activation: backward went through the block down
  to its input. Block 0 (and any block fed data, or an activation made without grad) never has
  it: its input is the batch, which requires no grad; a trainable block 0 reads ``w``.

Each cell is the first that applies of: ``starved`` (a parameter meant to train got no gradient:
``graph_cut``), ``moved`` (a frozen parameter moved: ``frozen_param_moved``), ``buffers`` (a
buffer changed: ``frozen_buffer_changed``), ``drift`` (``rounding_drift``), then ``wx``, ``w``,
``x`` or ``none`` (not in the graph) from the bits. The cells agree with the verdict: every
such verdict has its code in at least one block when the parameters it names are in blocks.
``block_flow`` is ``None`` for an ``error`` verdict and for parallel cases (whose check runs in
:mod:`.parallel.check`, which does not measure it).

Tolerance: relative L2 error ``||g - g_ref|| / ||g_ref||`` at most
``GRAD_RTOL[dtype]``. Differences below it are reported as rounding only (eval mode switches
some modules to fused fast paths that round differently).

Step axes (:mod:`.variants`): the reference runs under the case's autocast (eager, without
checkpointing), so that a mechanism is judged against the gradients *this* set-up gives, not
against float32; the tolerance is then the autocast dtype's (:func:`tolerance`), because
compiled kernels and fused paths round low-precision intermediates differently from eager ones.
Checkpointing recomputes the same forward and needs no allowance.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from . import adapters, families
from .devices import DeviceUnavailable
from .effects.amp import autocast
from .effects.checkpoint import checkpointed_blocks
from .effects.compile import compile_errors
from .families.base import Built, Inputs, call_model
from .mechanisms import FreezePlan
from .spec import Case
from .training import Workload, build_workload, freeze_plan

__all__ = [
    "BATCH_SEED",
    "CHECK_STEPS",
    "DRIFT_ULPS_PER_FORWARD",
    "FLOW_CODES",
    "GRAD_RTOL",
    "VALID_VERDICTS",
    "VERDICTS",
    "Findings",
    "Subject",
    "Verdict",
    "adapter_deltas",
    "block_cells",
    "check_case",
    "reference_case",
    "rel_err",
    "tolerance",
    "ulp",
    "verdict",
    "within_ulps",
]

VERDICTS = (
    "ok",
    "graph_cut",
    "frozen_param_moved",
    "frozen_buffer_changed",
    "grad_mismatch",
    "rounding_drift",
    "error",
)
#: Verdicts of a correct mechanism (``rounding_drift`` with a caveat).
VALID_VERDICTS = ("ok", "rounding_drift")
#: Codes of a ``block_flow`` cell (see the module docstring), the flows first, then the caveat
#: and the faults.
FLOW_CODES = ("wx", "w", "x", "none", "drift", "starved", "moved", "buffers")
#: k of rounding drift: ulps of ``|w| + |dW|`` an element may move per forward (see above).
DRIFT_ULPS_PER_FORWARD = 4
CHECK_STEPS = 3
GRAD_RTOL = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}
#: The dtype whose tolerance an autocast case gets.
_AMP_RTOL_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
#: Seed of the check's first batch (step k draws with ``BATCH_SEED + k``).
BATCH_SEED = 1000


@dataclass(frozen=True)
class Verdict:
    """A verdict, its one-sentence detail, and what the check measured beside it:
    ``block_flow`` (one :data:`FLOW_CODES` code per block; ``None`` where not measured) and
    ``drift_per_step`` (the largest change of a drifting frozen parameter in one step; ``None``
    where nothing drifted)."""

    verdict: str
    detail: str
    block_flow: tuple[str, ...] | None = None
    drift_per_step: float | None = None

    @property
    def valid(self) -> bool:
        return self.verdict in VALID_VERDICTS


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


def reference_case(case: Case) -> Case:
    """The case whose model is the reference of an adapted ``case``: the same adapted model
    (the case's parameter names) with the frozen blocks under ``requires_grad`` (which cuts
    nothing), so that it computes the gradients the adapters and the head should get."""
    if case.adapter == "none":
        raise ValueError(f"{case.id} has no adapter: its reference is the baseline's model")
    return case if case.pattern == "none" else dataclasses.replace(case, mechanism="requires_grad")


def _reference(case: Case) -> Built:
    """The reference model: the baseline's, in the case's train/eval modes; with an adapter,
    the same adapted model with the frozen blocks under ``requires_grad``."""
    if case.adapter != "none":
        return build_workload(reference_case(case)).built
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
    #: Frozen parameters that moved by rounding drift only (taken out of ``moved`` and
    #: ``base_moved``), by name, with their largest change in one step.
    drift: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Findings) -> None:
        """Add ``other``'s findings (another rank's) to these."""
        self.cut |= other.cut
        for mine, theirs in (
            (self.moved, other.moved),
            (self.buffers, other.buffers),
            (self.base_moved, other.base_moved),
            (self.drift, other.drift),
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
    probe = _FlowProbe(w.plan)
    drift = _DriftWatch([*frozen_named, *base], _forwards(case, w.plan))
    for k in range(steps):
        x, y = w.make_batch(BATCH_SEED + k)
        w.inputs, w.targets = x, y
        expected = _reference_grads(ref, w, intended, x, y)
        before_p = {n: p.detach().clone() for n, p in frozen_named.items()}
        before_b = {n: b.detach().clone() for n, b in frozen_bufs.items()}
        pre = _snapshot(w.model)
        deltas = adapter_deltas(w.model)
        w.mechanism.zero_grad(w)
        w.backward(w.forward_loss())
        drift.after_backward(w.model, w.optimizer)
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
        post = _snapshot(w.model)
        drift.after_step(pre, post, deltas, _rerun(w, pre, post, probe))
    # peft starts every B at zero, so no A gets a gradient on the first step: an adapter tensor
    # is cut off only if it got none in all the steps.
    f.cut |= {j for j, p in enumerate(intended) if id(p) in adapter_ids - f.adapter_grads}
    drift.classify(f)
    return verdict(w, f, tol, steps, flow=probe.bits())


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Copies of ``model``'s parameters and buffers, by name."""
    named = itertools.chain(model.named_parameters(), model.named_buffers())
    return {n: t.detach().clone() for n, t in named}


def _load(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (a :func:`_snapshot`) into ``model``'s parameters and buffers in place."""
    with torch.no_grad():
        for n, t in itertools.chain(model.named_parameters(), model.named_buffers()):
            t.copy_(state[n])


def _rerun(
    w: Workload, pre: dict[str, Tensor], post: dict[str, Tensor], probe: _FlowProbe
) -> dict[str, Tensor]:
    """Run the step just taken again from ``pre`` (the state before it), eager, forward and the
    mechanism's backward without the optimizer step, under ``probe``'s hooks; return the
    parameters' values after it and put ``post`` (the state after the real step) and the
    gradients back."""
    grads = {n: p.grad for n, p in w.model.named_parameters()}
    _load(w.model, pre)
    for p in w.model.parameters():
        p.grad = None
    with probe.watching():
        loss = w.forward_loss(eager=True)
        probe.forward_done()
        w.mechanism.backward(loss, w.trainable)
    after = {n: p.detach().clone() for n, p in w.model.named_parameters()}
    _load(w.model, post)
    for n, p in w.model.named_parameters():
        p.grad = grads[n]
    return after


def _forwards(case: Case, plan: FreezePlan) -> Callable[[str], int]:
    """Forwards the block holding a named parameter runs in one step: two for a checkpointed
    block (its forward is recomputed in backward), else one."""
    again = set(checkpointed_blocks(plan)) if case.checkpoint == "on" else set()
    return lambda name: 2 if _block_of(plan, name) in again else 1


def ulp(a: Tensor) -> Tensor:
    """The unit in the last place of ``|a|`` in ``a``'s dtype, elementwise: the gap to the next
    larger representable value, as float64. Computed from the exponent, not by arithmetic in
    ``a``'s dtype, so that the suite's flush-to-zero mode (denormals flushed on CPU) cannot
    zero the spacing of a denormal (that of 0 is the smallest denormal)."""
    info = torch.finfo(a.dtype)
    mag = a.detach().double().abs()
    _, exponent = torch.frexp(mag)  # mag = m * 2**exponent, 0.5 <= m < 1
    spacing = torch.ldexp(torch.full_like(mag, info.eps), exponent - 1)
    # Below the smallest normal (0 included, whose exponent frexp gives as 0) the spacing is
    # the smallest denormal's.
    return torch.where(mag < info.tiny, torch.full_like(mag, info.tiny * info.eps), spacing)


def within_ulps(before: Tensor, after: Tensor, delta: Tensor | None, k: float) -> bool:
    """Whether every element moved from ``before`` to ``after`` by at most ``k`` ulp of
    ``|before| + |delta|`` (``delta`` ``None``: 0), the ulp taken in ``before``'s dtype."""
    mag = before.double().abs() + (0.0 if delta is None else delta.double().abs())
    bound = ulp(mag.to(before.dtype)) * k
    change = (after.double() - before.double()).abs()
    return bool((change <= bound).all())


def adapter_deltas(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' contributions ``dW`` to base weights, by the base weight's name (peft LoRA
    layers: the sum over their active adapters of ``get_delta_weight``, ``lora_B @ lora_A *
    scaling``; the packed ``in_proj_weight`` of peft's ``MultiheadAttention`` layer). Base
    weights are named through their module, since peft's attention layer gives them new
    parameter objects at every walk of the model."""
    modules = list(model.named_modules())
    names = {id(m): n for n, m in modules}
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for _, m in modules:
            delta: Callable[[str], Tensor] | None = getattr(m, "get_delta_weight", None)
            base_of = getattr(m, "get_base_layer", None)
            active = getattr(m, "active_adapters", None)
            if delta is None or base_of is None or not active or m is base_of():
                continue
            base = base_of()
            attr = "in_proj_weight" if isinstance(base, nn.MultiheadAttention) else "weight"
            if id(base) not in names or not isinstance(getattr(base, attr, None), Tensor):
                continue
            names_of = getattr(m, "lora_A", {})
            total = sum((delta(a).detach() for a in active if a in names_of), torch.zeros(()))
            out[f"{names[id(base)]}.{attr}"] = total
    return out


class _DriftWatch:
    """Which moved frozen parameters meet the three conditions of rounding drift."""

    def __init__(self, names: Sequence[str], forwards: Callable[[str], int]) -> None:
        self.names = list(dict.fromkeys(names))
        self.k = {n: DRIFT_ULPS_PER_FORWARD * forwards(n) for n in self.names}
        self.touched: set[str] = set()  # in an optimizer, or got a gradient: fails (a)
        self.unlike: set[str] = set()  # the re-run did not move it the same way: fails (b)
        self.beyond: set[str] = set()  # moved more than k ulp in some step: fails (c)
        self.per_step: dict[str, float] = {}

    def after_backward(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Condition (a), after a step's backward."""
        held = [p for g in optimizer.param_groups for p in g["params"]]
        ids, ptrs = {id(p) for p in held}, {p.data_ptr() for p in held}
        params = dict(model.named_parameters())
        for n in self.names:
            p = params[n]
            if p.grad is not None or id(p) in ids or p.data_ptr() in ptrs:
                self.touched.add(n)

    def after_step(
        self,
        pre: dict[str, Tensor],
        post: dict[str, Tensor],
        deltas: dict[str, Tensor],
        rerun: dict[str, Tensor],
    ) -> None:
        """Conditions (b) and (c), after a step and its re-run without the optimizer step."""
        for n in self.names:
            if not torch.equal(rerun[n], post[n]):
                self.unlike.add(n)
            if torch.equal(post[n], pre[n]):
                continue
            change = float((post[n].double() - pre[n].double()).abs().max())
            self.per_step[n] = max(self.per_step.get(n, 0.0), change)
            if not within_ulps(pre[n], post[n], deltas.get(n), self.k[n]):
                self.beyond.add(n)

    def classify(self, f: Findings) -> None:
        """Move the parameters that drifted by rounding only from ``f.moved`` and
        ``f.base_moved`` to ``f.drift``."""
        bad = self.touched | self.unlike | self.beyond
        for moved in (f.moved, f.base_moved):
            for n in [n for n in moved if n not in bad and n in self.per_step]:
                del moved[n]
                f.drift[n] = self.per_step[n]


def _tensors(value: Any) -> Iterator[Tensor]:
    """The tensors in ``value``, through tuples, lists and dicts (model outputs too)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


class _FlowProbe:
    """Forward hooks on each block's modules that watch, over the steps' re-runs, whether a
    gradient reaches the block's input activations (``x``) and whether its parameters get
    gradients (``w``). See the module docstring."""

    def __init__(self, plan: FreezePlan) -> None:
        self.plan = plan
        n = len(plan.blocks)
        self.x = [False] * n
        self.w = [False] * n
        self._armed = False
        self._made: list[list[Tensor]] = [[] for _ in range(n)]

    def _pre_hook(self, block: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            if not self._armed:  # a checkpointed block's recomputation, inside backward
                return
            made = {id(t) for t in self._made[block]}
            for t in _tensors((args, kwargs)):
                if t.is_floating_point() and t.requires_grad and id(t) not in made:
                    t.register_hook(self._reached(block))

        return hook

    def _reached(self, block: int) -> Callable[[Tensor], None]:
        def hook(grad: Tensor) -> None:
            self.x[block] = True

        return hook

    def _post_hook(self, block: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if self._armed:
                self._made[block].extend(_tensors(out))

        return hook

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Hooks in place and armed for one forward; after backward, note which blocks'
        parameters got gradients; the hooks are removed on the way out."""
        handles = [
            h
            for i in range(len(self.plan.blocks))
            for _, m in self.plan.modules(i)
            for h in (
                m.register_forward_pre_hook(self._pre_hook(i), with_kwargs=True),
                m.register_forward_hook(self._post_hook(i)),
            )
        ]
        self._armed = True
        try:
            yield
            for i in range(len(self.plan.blocks)):
                if any(p.grad is not None for _, m in self.plan.modules(i) for p in m.parameters()):
                    self.w[i] = True
        finally:
            self._armed = False
            self._made = [[] for _ in self.plan.blocks]
            for h in handles:
                h.remove()

    def forward_done(self) -> None:
        """The forward is over: what runs a block's forward from now on is a recomputation."""
        self._armed = False
        self._made = [[] for _ in self.plan.blocks]

    def bits(self) -> list[tuple[bool, bool]]:
        """``(w, x)`` of each block."""
        return list(zip(self.w, self.x, strict=True))


def _base_weights(w: Workload) -> list[tuple[str, nn.Parameter]]:
    """The adapted blocks' own parameters (none without an adapter)."""
    return w.plan.base_params() if isinstance(w.plan, adapters.AdaptedPlan) else []


def _adapter_params(w: Workload) -> list[nn.Parameter]:
    """The adapter tensors of ``w``'s model (none without an adapter)."""
    return w.plan.adapter_params() if isinstance(w.plan, adapters.AdaptedPlan) else []


def verdict(
    w: Subject,
    f: Findings,
    tol: float,
    steps: int,
    *,
    flow: Sequence[tuple[bool, bool]] | None = None,
) -> Verdict:
    """The verdict of findings ``f`` over ``steps`` steps of ``w`` (see the module docstring),
    with its ``block_flow`` where ``flow`` (each block's ``(w, x)`` bits) is given."""
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
    drift = _drift_part(w, f, steps)
    if drift:
        parts.append(("rounding_drift", drift))
    cells = None if flow is None else tuple(block_cells(w.plan, intended, f, flow))
    per_step = max(f.drift.values()) if f.drift else None
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
            cells,
        )
    return Verdict(parts[0][0], "; ".join(d for _, d in parts), cells, per_step)


def _drift_part(w: Subject, f: Findings, steps: int) -> str:
    """The detail of rounding drift (empty where nothing drifted)."""
    if not f.drift:
        return ""
    names = sorted(f.drift)
    n_el = sum(p.numel() for n, p in w.model.named_parameters() if n in f.drift)
    return (
        f"{len(names)} frozen parameter tensors ({n_el:,} elements: "
        f"{', '.join(names[:2])}{', ...' if len(names) > 2 else ''}) moved by rounding only, "
        f"up to {max(f.drift.values()):.3g} per step (in no optimizer, grad None at every "
        f"step, the same without optimizer.step(), within {DRIFT_ULPS_PER_FORWARD} ulp of "
        f"|w| + |dW| per forward): a caveat, it accumulates over training"
    )


def _block_of(plan: FreezePlan, name: str) -> int | None:
    """The (first) block holding the parameter or buffer named ``name``."""
    for i, block in enumerate(plan.blocks):
        if any(name.startswith(f"{root}.") for root in block):
            return i
    return None


def block_cells(
    plan: FreezePlan,
    intended: Sequence[nn.Parameter],
    f: Findings,
    flow: Sequence[tuple[bool, bool]],
) -> list[str]:
    """Each block's :data:`FLOW_CODES` code from its ``(w, x)`` bits and the findings ``f``
    (``f.cut`` indexes ``intended``); the first that applies of ``starved``, ``moved``,
    ``buffers``, ``drift``, then ``wx``, ``w``, ``x``, ``none``."""
    if len(flow) != len(plan.blocks):
        raise ValueError(f"flow has {len(flow)} entries for {len(plan.blocks)} blocks")
    index = plan.block_index()
    marks: list[set[str]] = [set() for _ in plan.blocks]
    for j in f.cut:
        block = index.get(id(intended[j]))
        if block is not None:
            marks[block].add("starved")
    for code, names in (
        ("moved", [*f.moved, *f.base_moved]),
        ("buffers", list(f.buffers)),
        ("drift", list(f.drift)),
    ):
        for n in names:
            block = _block_of(plan, n)
            if block is not None:
                marks[block].add(code)
    cells: list[str] = []
    for (got_w, got_x), mark in zip(flow, marks, strict=True):
        fault = next((c for c in ("starved", "moved", "buffers", "drift") if c in mark), None)
        if fault is not None:
            cells.append(fault)
        else:
            cells.append(("w" if got_w else "") + ("x" if got_x else "") or "none")
    return cells
