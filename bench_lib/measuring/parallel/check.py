"""The validity check of a parallel case, run by every rank at once.

The verdicts are those of :mod:`bench_lib.measuring.verify`, against a single-process reference
on the *global* batch. Each rank builds a fresh workload of the case and runs
:data:`~bench_lib.measuring.verify.CHECK_STEPS` steps, each on its own batch of a global batch
drawn anew per step. Before each step every rank gathers the case's full parameters and buffers
(:meth:`~.strategies.base.Strategy.full_state`: torch's ``get_model_state_dict(...,
full_state_dict=True)`` under FSDP, the module's own state dict under DDP),
loads them into a plain model (the baseline's, nothing frozen, in the case's train/eval modes)
and back-propagates the global batch through it: the gradients the parameters meant to train
should get, since DDP and FSDP average the ranks' gradients of a mean loss.

* After the case's backward, each rank compares what it holds of each trainable gradient with
  the same slice of the reference (:meth:`~.strategies.base.Strategy.grad_pieces`): the whole
  gradient under DDP, its shard under FSDP. ``graph_cut`` and ``grad_mismatch`` as in one process.
* Under DDP every rank holds every gradient, and the ranks must agree: a max and a min
  all-reduce of the gradients must be equal (else ``grad_mismatch``, naming the disagreement).
* After the optimizer step, the full state is gathered again: a frozen parameter or buffer that
  is not bit-identical is ``frozen_param_moved`` / ``frozen_buffer_changed``.

The ranks' findings are gathered and merged (``all_gather_object``); every rank returns the same
verdict. When the set-up or the mechanism raises (DDP's "Expected to have finished reduction in
the prior iteration", FSDP1's uniform ``requires_grad``), the verdict is ``error`` with the
library's own message, as for a mechanism that raises in one process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import families
from ..devices import DeviceUnavailable
from ..effects.amp import autocast
from ..families.base import Built, call_model, inputs_to
from ..mechanisms import FreezePlan
from ..spec import Case
from ..training import Workload, freeze_plan, prepare
from ..verify import (
    BATCH_SEED,
    CHECK_STEPS,
    Findings,
    Verdict,
    reference_case,
    rel_err,
    tolerance,
    verdict,
)
from .strategies import GradPiece, Strategy, param_names
from .workload import build_rank_workload, concat_batches, rank_batch

__all__ = ["check_rank"]


@dataclass(frozen=True)
class _Reference:
    """The plain model of the reference and what its plan says is trainable and frozen."""

    model: nn.Module
    plan: FreezePlan
    trainable_intended: list[nn.Parameter]
    names: list[str]  # of trainable_intended
    frozen: list[str]  # frozen parameters and buffers


def _reference(case: Case) -> tuple[Built, _Reference]:
    """The reference: the baseline's plain model in the case's train/eval modes; with an
    adapter, the same adapted model (its parameter names are the case's) with the frozen blocks
    under ``requires_grad``, as in one process (:func:`~..verify.reference_case`)."""
    if case.adapter != "none":
        ref, plan, *_ = prepare(reference_case(case))
    else:
        ref = families.build(case.baseline())
        plan = freeze_plan(case, ref)
        plan.set_mode(case.frozen_mode)
    names = param_names(ref.model)
    intended = plan.trainable_params()
    frozen = [names[id(p)] for p in plan.frozen_params()] + [n for n, _ in plan.frozen_buffers()]
    return ref, _Reference(ref.model, plan, intended, [names[id(p)] for p in intended], frozen)


def check_rank(case: Case, rank: int, steps: int = CHECK_STEPS) -> Verdict:
    """Run the check on ``rank`` (every rank must call it; the process group is up)."""
    try:
        return _check(case, rank, steps)
    except (DeviceUnavailable, MemoryError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as e:  # the set-up or the mechanism refused: that is the finding
        return Verdict("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _ties(model: nn.Module) -> dict[str, str]:
    """Every name of a tied parameter but its first, to its first name
    (``lm_head.weight -> transformer.wte.weight``)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[n] = first[id(p)]
        else:
            first[id(p)] = n
    return out


def _full_state(setup: Strategy, w: Workload, ties: dict[str, str]) -> dict[str, Tensor]:
    """The case's full state (:meth:`~.strategies.base.Strategy.full_state`), a tied
    parameter's other names holding its first name's tensor: FSDP1 with ``use_orig_params``
    gives the second name of a tied parameter as a flat slice of its shard."""
    state = setup.full_state(w.built, w.wrapper)
    for alias, name in ties.items():
        if name in state:
            state[alias] = state[name]
    return state


def _moved(
    before: dict[str, Tensor], after: dict[str, Tensor], params: set[str], f: Findings
) -> None:
    """Record the frozen parameters (named in ``params``) and buffers that changed."""
    for n, old in before.items():
        new = after[n]
        if torch.equal(new, old):
            continue
        diff = float((new.float() - old.float()).abs().max())
        target = f.moved if n in params else f.buffers
        target[n] = max(target.get(n, 0.0), diff)
        if n not in params and not new.is_floating_point():
            f.counters.add(n)


def _check(case: Case, rank: int, steps: int) -> Verdict:
    rw = build_rank_workload(case, rank, case.seed + 1)
    w, setup = rw.workload, rw.strategy
    for _ in range(w.mechanism.warm_steps):
        w.step()
    built, ref = _reference(case)
    ties = _ties(ref.model)
    index = {n: j for j, n in enumerate(ref.names)}
    frozen_params = {n for n in ref.frozen if n in dict(ref.model.named_parameters())}
    f = Findings()
    tol = tolerance(case)
    dtype = getattr(torch, case.dtype)
    state = _full_state(setup, w, ties)
    for k in range(steps):
        batches = [rank_batch(case, built, BATCH_SEED + k, r) for r in range(case.world)]
        x, y = batches[rank]
        w.inputs, w.targets = inputs_to(x, w.device, dtype), y.to(w.device)
        gx, gy = concat_batches(batches)
        ref.model.load_state_dict(state)
        ref.model.zero_grad(set_to_none=True)
        with autocast(case, w.device.type):  # the case's own autocast (none: a null context)
            loss = built.loss(
                call_model(ref.model, inputs_to(gx, w.device, dtype)), gy.to(w.device)
            )
        loss.backward()
        expected = {
            n: p.grad for n, p in ref.model.named_parameters() if n in index and p.grad is not None
        }
        before = {n: state[n].clone() for n in ref.frozen if n in state}
        w.mechanism.zero_grad(w)
        w.backward(w.forward_loss())
        pieces = setup.grad_pieces(w.built, w.wrapper, expected, rank, case.world)
        floor = _noise_floor(expected.values(), dtype)
        for piece in pieces:
            exp = piece.expected
            if exp.numel() == 0 or not bool(exp.any()):
                continue
            g = piece.grad
            if g is None or not bool(g.any()):
                f.cut.add(index[piece.name])
                continue
            err = _rel_err(g, exp, floor)
            if err > tol:
                f.mismatch = max(f.mismatch, err)
            else:
                f.rounding = max(f.rounding, err)
        if setup.replicated and _ranks_disagree(pieces):
            f.disagree += 1
        w.optimizer_step()
        state = _full_state(setup, w, ties)
        _moved(before, state, frozen_params, f)
    merged = Findings()
    gathered: list[Findings | None] = [None] * case.world
    dist.all_gather_object(gathered, f)
    for other in gathered:
        assert other is not None
        merged.merge(other)
    del rw, w
    return verdict(ref, merged, tol, steps)


def _noise_floor(expected: Iterable[Tensor], dtype: torch.dtype) -> float:
    """The norm below which a reference gradient is rounding noise: ``dtype``'s epsilon times
    the norm of all the reference gradients together. A gradient that is zero in exact
    arithmetic (an attention key's bias: softmax ignores a shift that is the same for every
    key) comes out of either run as noise of about that size, summed in another order over
    the ranks' batches than over the global batch: relative to its own norm, that noise is
    O(1)."""
    norms = [torch.linalg.vector_norm(e.float()) for e in expected]
    if not norms:
        return 0.0
    return torch.finfo(dtype).eps * float(torch.linalg.vector_norm(torch.stack(norms)))


def _rel_err(g: Tensor, exp: Tensor, floor: float) -> float:
    """:func:`~..verify.rel_err`, relative to at least ``floor`` (:func:`_noise_floor`)."""
    norm = float(torch.linalg.vector_norm(exp.float()))
    if norm >= floor:
        return rel_err(g, exp)
    return float(torch.linalg.vector_norm(g.float() - exp.float())) / floor if floor > 0 else 0.0


def _ranks_disagree(pieces: list[GradPiece]) -> bool:
    """Whether the replicas' gradients differ: the elementwise max and min over the ranks
    (two all-reduces of every gradient, zeros where a rank has none) are not equal."""
    flat = [
        (p.grad if p.grad is not None else torch.zeros_like(p.expected)).reshape(-1).float()
        for p in pieces
    ]
    if not flat:
        return False
    high = torch.cat(flat)
    low = high.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return not torch.equal(high, low)
