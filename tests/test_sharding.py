"""Shards share the work by estimated time; depth overrides keep the profiles' explicit blocks;
the cost model's arithmetic by hand; two shards merge into one report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bench_lib.measuring.budget import Budget
from bench_lib.measuring.estimate import (
    DEFAULT_MODELS,
    CostModel,
    forward_flops,
    load_measured_seconds,
    model_for,
)
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import (
    PROFILES,
    Filters,
    generate,
    plan_shards,
    resolve_positions,
    shard,
)


def test_forward_flops_by_hand() -> None:
    assert forward_flops(Case("mlp", 4, 8, 2)) == 4 * 2 * 2 * 8 * 8
    t = Case("transformer", 2, 16, 3, extra=(("seq_len", 5),))
    assert forward_flops(t) == 2 * (24 * 3 * 5 * 16 * 16 + 4 * 3 * 5 * 5 * 16)
    cnn = Case("cnn", 2, 4, 1, extra=(("image_size", 3),))
    assert forward_flops(cnn) == 2 * 1 * 9 * 9 * 4 * (3 + 4)


def test_cost_model_sizes_steps_like_the_group_design() -> None:
    budget = Budget(warmup_rounds=1, target_time_s=1.0, min_rounds=2, max_rounds=10, ratio_pairs=3)
    model = CostModel(0.5, 0.1, 0.0, "test")  # every step 0.1 s
    case = Case("mlp", 2, 8, 2)
    # The case's share of its group: 1.25 x 24 expected rounds x (4 + 2) steps = 180; then
    # 1 warm-up + 10 phase reps + 16 fixed; no step axis, so no axis twin.
    assert model.steps(case, budget) == 180 + 1 + 10 + 16
    assert model.seconds(case, budget) == pytest.approx(0.5 + 207 * 0.1)
    # With fixed rounds (--bench-pairs 8): 1.25 x 8 x 6 = 60 group steps, plus the axis
    # twin's 2 x 3 pairs for a compiled case.
    fixed = dataclasses.replace(budget, fixed_rounds=8)
    assert model.steps(dataclasses.replace(case, compile="on"), fixed) == 60 + 27 + 6


def test_fit_recovers_a_known_model() -> None:
    budget = PROFILES["default"].budget
    truth = CostModel(0.7, DEFAULT_MODELS["cpu"].step_overhead_s, 3e-11, "truth")
    cases = generate(PROFILES["default"], Filters()).cases[:40]
    fitted = DEFAULT_MODELS["cpu"].fit({c: truth.seconds(c, budget) for c in cases}, budget)
    assert fitted.source == "fitted to 40 cases"
    # Rounds are sized from the model's own step time, so the refit is close, not exact.
    assert fitted.seconds_per_flop == pytest.approx(3e-11, rel=0.3)
    assert fitted.overhead_s == pytest.approx(0.7, abs=0.5)


@pytest.mark.parametrize("profile", ["default", "full", "gpu"])
def test_shards_are_balanced_within_20_percent(profile: str) -> None:
    p = PROFILES[profile]
    cases = generate(p, Filters()).cases
    _, seconds = model_for(cases, p.budget, None)
    groups = len({c.baseline() for c in cases})
    for n in range(2, groups // 3 + 1):
        plan = plan_shards(cases, n, seconds)
        assert plan.imbalance <= 0.20, (profile, n, plan.loads)
        parts = [shard(cases, i, n, seconds) for i in range(n)]
        assert sorted(c.id for part in parts for c in part) == sorted(c.id for c in cases)
        for part in parts:
            # A case stays with its baseline unless its group alone outweighs a shard's share.
            whole = [c for c in part if c.baseline() not in plan.split]
            assert {c.baseline() for c in whole} <= set(part)
        assert parts == [shard(cases, i, n, seconds) for i in range(n)]  # deterministic


def test_depth_overrides_resolve_explicit_blocks_per_depth() -> None:
    assert resolve_positions(("first", "middle"), 16) == (0, 8)
    assert resolve_positions(("first", "middle"), 4) == (0, 2)
    assert resolve_positions(("first", "middle", "last"), 1) == (0,)
    sweep = generate(PROFILES["default"], Filters(depths=(4,)))
    explicit = {c.frozen_blocks for c in sweep.cases if c.pattern == "explicit"}
    assert explicit == {(0, 2)}
    with pytest.raises(CaseError, match=r"index 8 is out of range for depth=4.*--bench-depth"):
        generate(PROFILES["default"], Filters(depths=(4,), blocks=(8,)))
    with pytest.raises(CaseError, match="block position='second' is not one of: first"):
        resolve_positions(("second",), 4)


def test_measured_seconds_come_from_pass_seconds(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    records = [
        {"case_id": "a", "pass_seconds": {"validity": 0.5, "timed": 1.0}},
        {"case_id": "b", "pass_seconds": {}},
    ]
    path.write_text(json.dumps({"benchmarks": [{"extra_info": r} for r in records]}))
    assert load_measured_seconds(path) == {"a": 1.5}
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"benchmarks": [{"extra_info": {"case_id": "a"}}]}))
    with pytest.raises(CaseError, match="no case with pass_seconds"):
        load_measured_seconds(old)
    with pytest.raises(CaseError, match="--bench-costs="):
        load_measured_seconds(tmp_path / "missing.json")


def test_a_one_time_cost_counts_once_in_the_shard_that_pays_it() -> None:
    """A compiled group (its baseline and one member, 10 s each) and three plain baselines of
    10 s; the first compile in a process costs 17 s more. The compiled group goes first, to one
    shard (37 s with the cost), the plain ones to the other (30 s). Without the one-time cost
    the planner would put a plain baseline beside the compiled group: estimated 30 and 20 s,
    really 47 and 20."""
    from bench_lib.measuring.shards import plan_shards

    compiled = [
        Case("mlp", 2, 16, 4, "none", (), "none", compile="on"),
        Case("mlp", 2, 16, 4, "prefix", (0,), "requires_grad", compile="on"),
    ]
    plain = [Case("mlp", d, 16, 4, "none", (), "none") for d in (3, 4, 5)]
    cases = compiled + plain
    seconds = dict.fromkeys(cases, 10.0)
    once = {c: ({"compile": 17.0} if c.compile == "on" else {}) for c in cases}
    plan = plan_shards(cases, 2, seconds, once)
    assert plan.loads == (37.0, 30.0)
    assert {plan.assignment[c] for c in compiled} == {0} and {
        plan.assignment[c] for c in plain
    } == {1}
    assert plan_shards(cases, 2, seconds).loads == (30.0, 20.0)
