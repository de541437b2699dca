"""Tier 2: validity verdicts on minimal models, each verdict shown, and their determinism."""

from __future__ import annotations

import random

import pytest

from bench_lib.measuring import stats
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.verify import check_case


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
