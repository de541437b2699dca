"""Tier 2: validity verdicts on minimal models, each verdict shown, and their determinism."""

from __future__ import annotations

import random

import pytest
import torch

from bench_lib.measuring import adapters, stats, training, verify
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.training import build_workload
from bench_lib.measuring.verify import check_case

needs_peft = pytest.mark.skipif(adapters.peft_missing() is not None, reason="peft missing")


def case(model: str, pattern: str, mechanism: str, **kw: object) -> Case:
    sizes = {"mlp": (4, 16, 4), "cnn": (4, 4, 2), "transformer": (3, 16, 2)}[model]
    extra = {"cnn": (("image_size", 4),), "transformer": (("seq_len", 4),)}.get(model, ())
    return Case(
        model, *sizes, pattern, pattern_blocks(pattern, sizes[0]), mechanism, extra=extra, **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("the_case", "verdict", "detail"),
    [
        (case("mlp", "prefix", "requires_grad"), "ok", "match the reference exactly"),
        (case("mlp", "prefix", "no_grad"), "ok", "frozen parameters and buffers stayed"),
        (case("mlp", "middle", "requires_grad"), "ok", "8 trainable tensors"),
        (case("mlp", "middle", "backward_inputs"), "ok", ""),
        (case("mlp", "alternating", "optimizer_only"), "ok", ""),
        (
            case("mlp", "middle", "no_grad"),
            "graph_cut",
            "2 of 8 trainable parameter tensors (272 elements, block 0) received no gradient",
        ),
        (case("mlp", "alternating", "inference_mode"), "graph_cut", "blocks 0, 2"),
        (
            case("mlp", "prefix", "zeroed_grad_in_optimizer"),
            "frozen_param_moved",
            "4 frozen parameter tensors",
        ),
        (
            case("mlp", "prefix", "late_freeze", optimizer="sgd"),
            "frozen_param_moved",
            "max |change|",
        ),
        (
            case("mlp", "prefix", "inference_mode_nocopy"),
            "error",
            "Inference tensors cannot be saved for backward",
        ),
        (case("cnn", "prefix", "requires_grad"), "frozen_buffer_changed", "running_mean"),
        (case("cnn", "prefix", "requires_grad", frozen_mode="eval"), "ok", ""),
        (case("cnn", "prefix", "no_grad"), "frozen_buffer_changed", "blocks.0.1.running_var"),
        (case("transformer", "suffix", "inference_mode_nocopy"), "graph_cut", "blocks 0, 1"),
    ],
    ids=lambda v: v.id if isinstance(v, Case) else None,
)
def test_each_verdict_on_a_minimal_model(the_case: Case, verdict: str, detail: str):
    v = check_case(the_case)
    assert v.verdict == verdict, v.detail
    assert detail in v.detail
    assert v.valid == (verdict == "ok")


def test_eval_fast_path_differs_by_rounding_only_and_stays_valid():
    v = check_case(case("transformer", "prefix", "no_grad", frozen_mode="eval"))
    assert v.verdict == "ok"
    assert "rounding only" in v.detail or "exactly" in v.detail


def test_zeroed_grads_without_weight_decay_and_momentum_would_pass():
    # The same trap is caught through AdamW's decoupled weight decay: with SGD (momentum and
    # weight decay both applied to a zero gradient) it is caught too.
    v = check_case(case("mlp", "prefix", "zeroed_grad_in_optimizer", optimizer="sgd"))
    assert v.verdict == "frozen_param_moved"


def test_verdicts_do_not_depend_on_order_or_timing(monkeypatch: pytest.MonkeyPatch):
    cases = [
        case("mlp", "middle", "no_grad"),
        case("cnn", "prefix", "requires_grad"),
        case("mlp", "prefix", "zeroed_grad_in_optimizer"),
        case("mlp", "prefix", "requires_grad"),
    ]
    first = {c: check_case(c) for c in cases}
    shuffled = cases[:]
    random.Random(1).shuffle(shuffled)
    clock = iter(range(10**6))
    monkeypatch.setattr(stats.Clock, "now", lambda: float(next(clock)) * 7.3)
    second = {c: check_case(c) for c in reversed(shuffled)}
    assert first == second


# ---------------------------------------------------------------------------- rounding drift


def _lora_attention(pattern: str = "prefix", mechanism: str = "no_grad") -> Case:
    return Case(
        "transformer", 2, 16, 2, pattern, pattern_blocks(pattern, 2), mechanism,
        extra=(("seq_len", 4),), adapter="lora", lora_rank=4,
    )  # fmt: skip


def test_ulp_by_hand() -> None:
    one = torch.tensor([1.0, 0.75, 0.0])
    expected = [2.0**-23, 2.0**-24, float(torch.finfo().tiny) * 2.0**-23]
    torch.set_flush_denormal(False)
    try:
        assert verify.ulp(one).tolist() == expected
        # The same with denormals flushed (as the suite runs): no arithmetic in float32.
        torch.set_flush_denormal(True)
        assert verify.ulp(one).tolist() == expected
    finally:
        torch.set_flush_denormal(True)  # as every workload build leaves it
    # |w| + |dW| = 1.25: 4 ulp of it is 4 * 2**-23, although 0.75's own ulp is half that.
    w, dw = torch.tensor([0.75]), torch.tensor([0.5])
    assert verify.within_ulps(w, w + 4 * 2.0**-23, dw, 4)
    assert not verify.within_ulps(w, w + 5 * 2.0**-23, dw, 4)
    assert not verify.within_ulps(w, w + 4 * 2.0**-23, None, 4)  # 8 ulp of 0.75 alone


@needs_peft
@pytest.mark.parametrize("mechanism", ["no_grad", "requires_grad"])
def test_peft_attention_lora_gets_the_rounding_drift_caveat(mechanism: str) -> None:
    """peft's MultiheadAttention layer merges its adapters into the base weights before each
    forward and unmerges them after it: the base weights move by rounding. In no optimizer, no
    gradient, the same without optimizer.step(), within k ulp: a caveat, not ✗."""
    v = check_case(_lora_attention(mechanism=mechanism))
    assert v.verdict == "rounding_drift", v.detail
    assert v.valid
    assert "in_proj_weight" in v.detail and "moved by rounding only" in v.detail
    assert v.drift_per_step is not None and 0 < v.drift_per_step < 1e-6
    assert v.block_flow == ("none", "drift")


@needs_peft
def test_adapter_deltas_are_lora_b_times_a_times_scaling() -> None:
    w = build_workload(_lora_attention())
    with torch.no_grad():
        for p in w.plan.adapter_params():
            p.normal_()  # B starts at zero: make every delta non-zero
    deltas = verify.adapter_deltas(w.model)
    attn = "blocks.1.self_attn"
    assert set(deltas) == {
        f"{attn}.base_layer.in_proj_weight",
        f"{attn}.base_layer.out_proj.base_layer.weight",
        "blocks.1.linear1.base_layer.weight",
        "blocks.1.linear2.base_layer.weight",
    }
    params = dict(w.model.named_parameters())
    a, b = params[f"{attn}.lora_A.default.weight"], params[f"{attn}.lora_B.default.weight"]
    scaling = adapters.ALPHA_PER_RANK
    assert torch.allclose(deltas[f"{attn}.base_layer.in_proj_weight"], b @ a * scaling)
    base = dict(w.model.named_parameters())
    for name, delta in deltas.items():
        assert delta.shape == base[name].shape


@pytest.mark.parametrize(
    "the_case",
    [
        case("mlp", "prefix", "zeroed_grad_in_optimizer"),
        case("mlp", "prefix", "late_freeze"),
        case("mlp", "alternating", "zeroed_grad_in_optimizer", optimizer="sgd"),
    ],
    ids=lambda c: c.id,
)
def test_an_optimizer_moving_a_frozen_weight_a_tiny_bit_is_not_drift(
    the_case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At learning rate 1e-5 AdamW's weight decay moves a frozen weight that stays in the
    optimizer by about one ulp a step: as small as peft's drift, and within k ulp. It is in an
    optimizer and gets a (zero) gradient, and the move vanishes without optimizer.step(): ✗."""
    monkeypatch.setattr(training, "LEARNING_RATE", 1e-5)
    v = check_case(the_case)
    assert v.verdict == "frozen_param_moved", v.detail
    assert v.drift_per_step is None and "drift" not in (v.block_flow or ())


def test_the_weight_decay_move_would_pass_the_ulp_test_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """So conditions (a) and (b), not (c), are what keep it ✗."""
    monkeypatch.setattr(training, "LEARNING_RATE", 1e-5)
    w = build_workload(case("mlp", "prefix", "zeroed_grad_in_optimizer"))
    frozen = w.frozen_params
    before = [p.detach().clone() for p in frozen]
    w.step()
    assert any(not torch.equal(p, b) for p, b in zip(frozen, before, strict=True))
    assert all(
        verify.within_ulps(b, p.detach(), None, verify.DRIFT_ULPS_PER_FORWARD)
        for p, b in zip(frozen, before, strict=True)
    )


def _watch_one(rerun_same: bool, grad: bool, within: bool) -> verify.Findings:
    """The drift watch on one parameter ``p`` moved by one step, each condition chosen."""
    model = torch.nn.Linear(2, 2, bias=False)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    watch = verify._DriftWatch(["weight"], lambda name: 1)
    if grad:
        model.weight.grad = torch.zeros_like(model.weight)
    watch.after_backward(model, opt)
    pre = {"weight": torch.ones(2, 2)}
    post = {"weight": torch.ones(2, 2) + (2.0**-23 if within else 1e-3)}
    rerun = {"weight": post["weight"] if rerun_same else pre["weight"]}
    watch.after_step(pre, post, {}, rerun)
    f = verify.Findings(moved={"weight": float((post["weight"] - 1).max())})
    watch.classify(f)
    return f


@pytest.mark.parametrize(
    ("rerun_same", "grad", "within", "drift"),
    [
        (True, False, True, True),
        (False, False, True, False),  # (b): not the same without optimizer.step()
        (True, True, True, False),  # (a): it got a gradient
        (True, False, False, False),  # (c): beyond k ulp
    ],
)
def test_each_condition_of_drift_is_needed(
    rerun_same: bool, grad: bool, within: bool, drift: bool
) -> None:
    f = _watch_one(rerun_same, grad, within)
    assert ("weight" in f.drift) == drift
    assert ("weight" in f.moved) == (not drift)
