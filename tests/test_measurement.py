"""Tier 2: measurement against known allocations, byte counts and FLOP counts.

The MLP of these tests has ``depth`` blocks ``Linear(w, w) + ReLU`` and a head
``Linear(w, 10)``, float32. By hand, with b the batch size:

* a Linear of width w costs ``2 b w^2`` FLOPs forward, and as much again for the weight
  gradient (dW) and for the input gradient (dX), each only when needed;
* parameters: ``depth * (w^2 + w) + 10 w + 10`` elements, 4 bytes each;
* AdamW keeps two tensors per trained parameter plus a 4-byte ``step``; SGD with momentum one.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from bench_lib.measuring import flops as cost
from bench_lib.measuring import memory
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.training import build_workload

B, W, D, C = 8, 32, 4, 10
PATTERNS = ("prefix", "suffix", "middle", "alternating", "all_but_head")
MECHANISMS = ("no_grad", "inference_mode", "requires_grad", "optimizer_only", "backward_inputs")


def mlp_case(pattern: str = "none", mechanism: str = "none", optimizer: str = "adamw") -> Case:
    return Case("mlp", D, W, B, pattern, pattern_blocks(pattern, D), mechanism, optimizer)


def expected_flops(frozen: set[int], mechanism: str) -> tuple[int, int]:
    """Hand count: forward always runs every block and the head; backward pays, per Linear
    that recorded a graph, dW when its weight gets a gradient and dX when its input needs one."""
    block, head = 2 * B * W * W, 2 * B * W * C
    forward = D * block + head
    cut = mechanism in ("no_grad", "inference_mode")  # frozen blocks record nothing
    weight_grad = [mechanism != "requires_grad" or i not in frozen for i in range(D)]
    backward = 0
    graph = False  # does the input of the current Linear require grad?
    # Under a cut, backward starts from the loss and stops at the last frozen block: the graph
    # recorded before it is unreachable, so its blocks cost nothing (and get no gradient).
    start = max(frozen) + 1 if cut else 0
    for i in range(start, D):
        if mechanism == "backward_inputs":
            # Only paths that reach a trainable parameter are computed.
            dw = i not in frozen
            dx = any(j not in frozen for j in range(i))
        else:
            dw, dx = weight_grad[i], graph
        backward += block * (dw + dx)
        graph = graph or weight_grad[i]
    head_dx = any(j not in frozen for j in range(D)) if mechanism == "backward_inputs" else graph
    backward += head * (1 + head_dx)
    return forward, backward


@pytest.mark.parametrize(
    ("pattern", "mechanism"), [("none", "none"), *itertools.product(PATTERNS, MECHANISMS)]
)
def test_mlp_flops_equal_the_closed_form(pattern: str, mechanism: str):
    case = mlp_case(pattern, mechanism)
    flops = cost.count_step_flops(build_workload(case))
    assert (flops.forward, flops.backward) == expected_flops(set(case.frozen_blocks), mechanism)
    assert flops.uncounted_ops == ()


def test_closed_form_spot_values():
    # Baseline: 4 blocks of 16384 + head 5120 forward; backward dW 4*16384+5120, dX 3*16384+5120.
    assert expected_flops(set(), "none") == (70656, 124928)
    # requires_grad on the middle block still pays its dX, not its dW (block 1 of 4).
    assert expected_flops({1}, "requires_grad") == (70656, 124928 - 16384)
    # no_grad on the middle block cuts the graph: block 0 gets nothing, block 2 has no dX.
    assert expected_flops({1}, "no_grad") == (70656, 124928 - 16384 - 16384 - 16384 - 16384)


def test_transformer_flops_count_attention_and_the_fused_fast_path():
    layer_flops = cost.encoder_layer_flops((2, 16, 32), (96, 32), (128, 32))
    # qkv 2*32*32*96 + attention 4*2*16*16*32 + out 2*32*32*32 + ffn 4*32*32*128
    assert layer_flops == 196608 + 65536 + 65536 + 524288
    head = 2 * 2 * 32 * 10
    for mode in ("train", "eval"):
        case = Case(
            "transformer",
            2,
            32,
            2,
            "prefix",
            (0,),
            "no_grad",
            frozen_mode=mode,
            extra=(("seq_len", 16),),
        )
        flops = cost.count_step_flops(build_workload(case))
        assert flops.forward == 2 * layer_flops + head, mode
        assert flops.uncounted_ops == ()


def _bytes(case: Case) -> memory.ByteCounts:
    w = build_workload(case)
    w.step()
    return memory.measure_bytes_by_category(w)


def test_bytes_by_category_match_hand_sizes():
    param_elems = D * (W * W + W) + C * W + C
    block_elems, head_elems = W * W + W, C * W + C
    counts = _bytes(mlp_case())
    assert counts.param_bytes == 4 * param_elems
    assert counts.grad_bytes == 4 * param_elems
    assert counts.optimizer_state_bytes == 2 * 4 * param_elems + 4 * (2 * D + 2)
    # Saved for backward: the input and each ReLU output (b*w floats, each the next Linear's
    # input too, stored once), log_softmax output (b*10), int64 targets (b) and a 4-byte scalar.
    assert counts.saved_activation_bytes == 4 * B * W * (D + 1) + 4 * B * C + 8 * B + 4

    frozen = mlp_case("prefix", "requires_grad")  # blocks 0, 1 frozen
    trained = param_elems - 2 * block_elems
    c = _bytes(frozen)
    assert c.param_bytes == 4 * param_elems
    assert c.grad_bytes == 4 * trained
    assert c.optimizer_state_bytes == 2 * 4 * trained + 4 * (2 * 2 + 2)
    # Block 1's output (block 2's input) is the first thing saved.
    assert c.saved_activation_bytes == 4 * B * W * 3 + 4 * B * C + 8 * B + 4

    sgd = _bytes(mlp_case("prefix", "optimizer_only", "sgd"))
    assert sgd.grad_bytes == 4 * param_elems  # frozen ones still get gradients
    assert sgd.optimizer_state_bytes == 4 * trained  # one momentum buffer per trained tensor
    assert trained == 2 * block_elems + head_elems


def test_cpu_peak_sees_a_known_allocation():
    size = 32 * 2**20

    def allocate() -> None:
        t = torch.empty(size, dtype=torch.uint8)
        t.fill_(1)
        del t

    peak = memory.cpu_peak_allocated(allocate)
    assert abs(peak - size) <= 0.10 * size


def test_cpu_peak_of_overlapping_allocations():
    mib = 2**20

    def allocate() -> None:
        a = torch.ones(8 * mib, dtype=torch.uint8)
        b = torch.ones(4 * mib, dtype=torch.uint8)  # a and b live: 12 MiB
        del a
        c = torch.ones(2 * mib, dtype=torch.uint8)  # b and c: 6 MiB
        del b, c

    peak = memory.cpu_peak_allocated(allocate)
    assert abs(peak - 12 * mib) <= 0.10 * 12 * mib


def test_step_peak_covers_live_state_and_saved_activations():
    w = build_workload(mlp_case())
    w.step()
    result = memory.measure_peak_memory(w)
    counts = memory.measure_bytes_by_category(w)
    floor = counts.param_bytes + counts.grad_bytes + counts.optimizer_state_bytes
    assert result.memory_method == "profiler_events"
    assert result.peak_reserved_bytes is None
    assert result.peak_memory_bytes >= floor + counts.saved_activation_bytes
    # ... and not wildly more: temporaries of this MLP are a few activations large.
    assert result.peak_memory_bytes <= floor + 4 * counts.saved_activation_bytes


def test_frozen_prefix_saves_memory_against_the_baseline():
    peaks = {}
    for mech in ("none", "requires_grad", "optimizer_only"):
        w = build_workload(mlp_case("none" if mech == "none" else "prefix", mech))
        w.step()
        peaks[mech] = memory.measure_peak_memory(w).peak_memory_bytes
    assert peaks["requires_grad"] < peaks["optimizer_only"] <= peaks["none"]


def test_a_workload_flushes_denormals_so_a_long_group_does_not_slow_its_baseline() -> None:
    """A fixed batch trained for hundreds of steps drives gradients and moments into the
    denormal range, where x86 arithmetic slows many times (devices.flush_denormals); every
    workload build flushes them to zero, and the machine info records it."""
    from bench_lib.measuring import devices, env

    torch.set_flush_denormal(False)
    tiny = torch.tensor([1e-39], dtype=torch.float32)
    assert (tiny * 1.0).item() != 0.0  # a denormal survives arithmetic by default
    build_workload(Case("mlp", 2, 8, 4, "prefix", (0,), "requires_grad"))
    assert (tiny * 1.0).item() == 0.0
    assert devices.flush_denormals() is True
    assert env.machine_info()["flush_denormal"] is True


def test_release_settles_a_grown_heap_into_the_permanent_generation(monkeypatch) -> None:
    """What a lazily imported library leaves alive is frozen once a case is over, so that the
    collections between a group's rounds stop walking it; garbage is collected first, and
    nothing is frozen when the collection was fast, where a case may still be alive, or while
    a tensor is (a leak must stay visible to the next case's census)."""
    import gc
    import weakref

    from bench_lib.measuring import caserun

    class Box(list):  # a list that can be weakly referenced
        pass

    survivors = [[i] for i in range(50_000)]  # tracked objects, alive
    cyclic = Box()
    cyclic.append(cyclic)  # garbage only a collection frees
    ref = weakref.ref(cyclic)
    del cyclic

    monkeypatch.setattr(caserun, "SLOW_COLLECT_S", float("inf"))
    frozen = gc.get_freeze_count()
    caserun.release(settle=True)  # fast: nothing frozen
    assert gc.get_freeze_count() == frozen
    assert ref() is None  # the cycle was collected

    monkeypatch.setattr(caserun, "SLOW_COLLECT_S", 0.0)
    caserun.release()  # not a settling point: nothing frozen
    assert gc.get_freeze_count() == frozen
    # What other tests left alive counts as allowed; a leak 8 KiB over it does not.
    alive = memory.process_tensor_bytes(torch.device("cpu"))
    monkeypatch.setattr(caserun, "CPU_FOREIGN_SLACK_BYTES", alive + 4096)
    leak = torch.zeros(2048)
    caserun.release(settle=True)  # a leak the next census must see: nothing frozen
    assert gc.get_freeze_count() == frozen
    del leak
    caserun.release(settle=True)
    assert gc.get_freeze_count() >= frozen + len(survivors)
    del survivors
