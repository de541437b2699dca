"""Tier 2: nothing of a case outlives it, and a case's peak is its own.

Every case is measured in full through ``runner.measure_case`` at tiny sizes; afterwards no
tensor with a ``grad_fn`` is alive, the tensors gc can reach are back to what they were, and no
model or optimizer of the case survives. Graph cuts matter most: the trainable blocks before a
``no_grad``/``inference_mode`` block are never back-propagated, so any reference cycle through
their part of the graph would keep it alive for good (the CUDA peaks of the first GPU run grew
from case to case that way).
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from bench_lib.measuring import memory, phases, runner
from bench_lib.measuring.budget import Budget
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.training import build_workload
from bench_lib.vocab import MECHANISMS, PATTERNS

TINY = Budget(
    warmup_rounds=0, target_time_s=1e-3, min_rounds=1, max_rounds=1, ratio_pairs=1, phase_reps=1
)
FREEZING = [m for m in MECHANISMS if m != "none"]
CUT_PATTERNS = [p for p in PATTERNS if p not in ("none", "explicit")]


@pytest.fixture(scope="module", autouse=True)
def _warm() -> Iterator[None]:
    runner.warm_up_process("cpu")  # also moves what is alive into gc's permanent generation
    yield
    gc.unfreeze()


def _time_steps(values: Sequence[float]) -> None:
    """The runner hands over the values its decision group timed (nothing to run here)."""
    assert values and all(v > 0 for v in values)


def _census() -> dict[str, int]:
    gc.collect()
    objs = gc.get_objects()
    tensors = [o for o in objs if issubclass(type(o), torch.Tensor)]
    return {
        "tensors": len(tensors),
        "with_grad_fn": sum(1 for t in tensors if t.grad_fn is not None),
        "modules": sum(1 for o in objs if issubclass(type(o), nn.Module)),
        "optimizers": sum(1 for o in objs if issubclass(type(o), torch.optim.Optimizer)),
    }


def _mlp(pattern: str, mechanism: str) -> Case:
    return Case("mlp", 4, 8, 2, pattern, pattern_blocks(pattern, 4), mechanism)


def _transformer(pattern: str, mechanism: str) -> Case:
    return Case(
        "transformer",
        4,
        16,
        2,
        pattern,
        pattern_blocks(pattern, 4),
        mechanism,
        extra=(("seq_len", 4),),
    )


CASES = [
    _mlp("none", "none"),
    *(_mlp(p, m) for p, m in itertools.product(("suffix", "middle"), FREEZING)),
    *(
        _transformer(p, m)
        for p, m in itertools.product(CUT_PATTERNS, ("no_grad", "inference_mode"))
    ),
    _transformer("suffix", "inference_mode_nocopy"),  # the mechanism raises: status 'error'
]


def _assert_clean(before: dict[str, int], record: dict[str, Any]) -> None:
    after = _census()
    assert after == before, f"{record['case_id']} ({record['status']}) left {after} vs {before}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nothing_of_a_case_outlives_it(case: Case) -> None:
    before = _census()
    record = runner.measure_case(case, TINY, _time_steps)
    assert record["status"] in ("ok", "error"), record["status_message"]
    if record["status"] == "ok":
        assert record["foreign_bytes"] == 0
        state = record["param_bytes"] + record["grad_bytes"] + record["optimizer_state_bytes"]
        assert record["peak_memory_bytes"] >= state
    else:
        assert record["verdict"] == "error"
    _assert_clean(before, record)


def _raise_oom(*args: Any, **kwargs: Any) -> Any:
    raise torch.OutOfMemoryError("CUDA out of memory (injected)")


def _raise_error(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected failure in the phase pass")


@pytest.mark.parametrize(
    ("target", "replacement", "status"),
    [
        (memory, ("measure_peak_memory", _raise_oom), "oom"),
        (phases, ("measure_phases", _raise_error), "error"),
    ],
    ids=["oom-in-memory-pass", "error-in-phase-pass"],
)
def test_a_failing_case_releases_everything(
    monkeypatch: pytest.MonkeyPatch, target: Any, replacement: tuple[str, Any], status: str
) -> None:
    monkeypatch.setattr(target, *replacement)
    before = _census()
    record = runner.measure_case(_transformer("suffix", "no_grad"), TINY, _time_steps)
    assert record["status"] == status
    assert "injected" in record["status_message"]
    _assert_clean(before, record)


def test_the_census_sees_a_graph_kept_alive_by_a_cycle() -> None:
    """The check above can fail: packing the saved tensor itself (the old bytes-by-category
    pass) keeps the part of the graph before a cut alive, and the census finds it."""
    before = _census()
    w = build_workload(_mlp("suffix", "no_grad"))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        loss = w.forward_loss()
    w.backward(loss)
    del w, loss
    after = _census()
    assert after["with_grad_fn"] > before["with_grad_fn"]
    gc.collect()


def test_cuda_peak_arithmetic_by_hand() -> None:
    mib = 1 << 20
    # Live state 100 MiB, 8 MiB of cuBLAS workspace, nothing foreign; the step rises 50 MiB.
    assert memory.cuda_peak(100 * mib, 108 * mib, 158 * mib, 8 * mib) == (150 * mib, 0)
    # 30 MiB left over from an earlier case: foreign, and kept out of the peak.
    assert memory.cuda_peak(100 * mib, 138 * mib, 188 * mib, 8 * mib) == (150 * mib, 30 * mib)
    # A step that frees more than it allocates never lowers the peak below the live state.
    assert memory.cuda_peak(100 * mib, 108 * mib, 108 * mib, 8 * mib) == (100 * mib, 0)
    assert [memory.cuda_rounded(n) for n in (0, 1, 512, 513, 4000)] == [0, 512, 512, 1024, 4096]


class FakeAllocator:
    """The allocator's numbers for a step that allocates ``rise`` bytes above the start."""

    def __init__(self, workspace: int, foreign: int, rise: int) -> None:
        self.workspace, self.foreign, self.rise = workspace, foreign, rise
        self.live = 0
        self.reset = False
        self.calls: list[str] = []

    def memory_allocated(self, device: torch.device) -> int:
        self.calls.append("memory_allocated")
        return self.live + self.workspace + self.foreign

    def max_memory_allocated(self, device: torch.device) -> int:
        self.calls.append("max_memory_allocated")
        assert self.reset, "peak read without a reset at the start of the step"
        return self.live + self.workspace + self.foreign + self.rise

    def max_memory_reserved(self, device: torch.device) -> int:
        return 64 << 20

    def reset_peak_memory_stats(self, device: torch.device) -> None:
        self.calls.append("reset")
        self.reset = True

    def synchronize(self, device: torch.device) -> None:
        self.calls.append("synchronize")


def test_cuda_path_with_injected_allocator_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA branch of the memory pass, run on a CPU workload that claims to be on CUDA, with
    the allocator's statistics injected: live state in 512-byte rounding, workspace and foreign
    bytes apart, the rise read after a reset."""
    fake = FakeAllocator(workspace=8 << 20, foreign=3 << 20, rise=5 << 20)
    for name in ("memory_allocated", "max_memory_allocated", "max_memory_reserved"):
        monkeypatch.setattr(memory.Allocator, name, getattr(fake, name))
    monkeypatch.setattr(memory.Allocator, "reset_peak_memory_stats", fake.reset_peak_memory_stats)
    monkeypatch.setattr(memory.Allocator, "synchronize", fake.synchronize)
    w = build_workload(_mlp("prefix", "requires_grad"))
    w.step()
    state = memory._live_state(w)
    fake.live = memory.storage_bytes(state, cuda_rounding=True)
    cuda = torch.device("cuda", 0)
    assert memory.measure_workspace(cuda) == fake.workspace + fake.live + fake.foreign
    memory._WORKSPACE[str(cuda)] = fake.workspace
    monkeypatch.setattr(memory, "_live_state", lambda _w: state)
    monkeypatch.setattr(w, "device", cuda)
    monkeypatch.setattr("bench_lib.measuring.devices.synchronize", lambda device: None)
    try:
        result = memory.measure_peak_memory(w)
    finally:
        memory._WORKSPACE.pop(str(cuda), None)
    assert result.memory_method == "cuda_allocator"
    assert result.peak_memory_bytes == fake.live + fake.rise
    assert result.foreign_bytes == fake.foreign
    assert result.workspace_bytes == fake.workspace
    assert result.peak_reserved_bytes == 64 << 20
    assert fake.calls.index("reset") < fake.calls.index("max_memory_allocated")
    # Every parameter, buffer and state tensor of this MLP is over 512 bytes or rounded up.
    assert fake.live >= memory.storage_bytes(state)


def test_workspace_is_zero_on_cpu() -> None:
    assert memory.measure_workspace(torch.device("cpu")) == 0
    assert memory.workspace_bytes(torch.device("cpu")) == 0
