"""A rank's workload: the case's model built, frozen and wrapped for its set-up.

Every rank builds the model from the case with the same seed (identical initial parameters),
lets the mechanism set its flags and install its wrappers, puts the frozen blocks in their mode,
and only then wraps the model (DDP registers the parameters that require grad when it is built;
FSDP1 checks each unit's flags when it flattens it), as a user's code does. Each rank draws its
own batch of ``batch_size`` samples (:func:`rank_seed`): the global batch is ``world`` times
that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from .. import devices
from ..effects import StepEffects
from ..families.base import Batch, Built, Inputs, inputs_to
from ..spec import Case
from ..training import Workload, build_optimizer, prepare
from .strategies import Strategy, get_strategy, param_names

__all__ = [
    "RankWorkload",
    "backend_for",
    "build_rank_workload",
    "concat_batches",
    "rank_batch",
    "rank_device",
    "rank_seed",
]

#: The process-group backend of each device type: gloo on CPU, nccl on CUDA.
BACKENDS: dict[str, str] = {"cpu": "gloo", "cuda": "nccl"}


def backend_for(device: str) -> str:
    """``gloo`` for ``cpu``, ``nccl`` for ``cuda`` (one process per GPU)."""
    if device not in BACKENDS:
        raise ValueError(f"device={device!r} is not one of: {', '.join(BACKENDS)}")
    return BACKENDS[device]


def rank_device(device: str, rank: int) -> torch.device:
    """The device of ``rank``: the CPU, or GPU number ``rank`` (one process per device)."""
    return torch.device("cuda", rank) if device == "cuda" else torch.device(device)


def rank_seed(seed: int, rank: int, world: int) -> int:
    """The batch seed of ``rank`` for a global batch seeded ``seed`` (distinct per rank and per
    seed; ``seed`` itself in a world of one)."""
    return seed * world + rank


def rank_batch(case: Case, built: Built, seed: int, rank: int) -> Batch:
    """``rank``'s batch (on the CPU) of the global batch seeded ``seed``."""
    return built.make_batch(torch.Generator().manual_seed(rank_seed(seed, rank, case.world)))


def concat_batches(batches: list[Batch]) -> Batch:
    """The global batch: the ranks' inputs and targets concatenated along dim 0, in rank
    order."""
    first = batches[0][0]
    inputs: Inputs
    if isinstance(first, torch.Tensor):
        inputs = torch.cat([cast(torch.Tensor, b[0]) for b in batches])
    elif isinstance(first, dict):
        dicts = [cast(dict[str, torch.Tensor], b[0]) for b in batches]
        inputs = {k: torch.cat([d[k] for d in dicts]) for k in first}
    else:
        tuples = [cast(tuple[torch.Tensor, ...], b[0]) for b in batches]
        inputs = tuple(torch.cat([t[i] for t in tuples]) for i in range(len(first)))
    return inputs, torch.cat([b[1] for b in batches])


@dataclass
class RankWorkload:
    """A rank's :class:`~bench_lib.measuring.training.Workload` (whose ``wrapper`` the step
    calls), its strategy, and the parameter counts before wrapping (elements)."""

    workload: Workload
    strategy: Strategy
    trainable_params: int
    frozen_params: int


def build_rank_workload(case: Case, rank: int, batch_seed: int) -> RankWorkload:
    """Build ``case``'s workload on ``rank`` (the process group is up): model, effects,
    mechanism, frozen mode (:func:`~bench_lib.measuring.training.prepare`, as in one process),
    the strategy's wrapper, optimizer, and the rank's batch of the global batch seeded
    ``batch_seed``. Raises what the strategy raises when it refuses the model."""
    strategy = get_strategy(case.parallel)
    device = rank_device(case.device, rank)
    devices.pin_threads(case.threads)
    built, plan, mechanism, trainable, uninstall = prepare(case)
    names = param_names(built.model)
    wanted = {names[id(p)] for p in trainable}
    counts = (
        sum(p.numel() for p in plan.trainable_params()),
        sum(p.numel() for p in plan.frozen_params()),
    )
    wrapper = strategy.wrap(built, device)
    params = strategy.optimizer_params(built, wrapper, wanted)
    optimizer = build_optimizer(case.optimizer, params)
    x, y = rank_batch(case, built, batch_seed, rank)
    dtype = getattr(torch, case.dtype)
    w = Workload(
        case,
        built,
        plan,
        mechanism,
        params,
        optimizer,
        inputs_to(x, device, dtype),
        y.to(device),
        device,
        uninstall,
        wrapper=wrapper,
        effects=StepEffects(case, device),
    )
    return RankWorkload(w, strategy, *counts)
