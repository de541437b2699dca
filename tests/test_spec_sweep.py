"""Tier 1: pure functions against hand-computed values (patterns, cases, sweep, statistics)."""

from __future__ import annotations

import pytest

from bench_lib.measuring import stats
from bench_lib.measuring.families import FAMILIES
from bench_lib.measuring.mechanisms import REGISTRY as MECHANISM_REGISTRY
from bench_lib.measuring.patterns import PATTERN_DOCS, pattern_blocks, segments
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import (
    PROFILES,
    Filters,
    generate,
    parse_ints,
    parse_list,
    plan_shards,
    shard,
)
from bench_lib.vocab import MECHANISMS, MODELS, PATTERNS


@pytest.mark.parametrize(
    ("pattern", "depth", "expected"),
    [
        ("none", 4, ()),
        ("prefix", 1, (0,)),
        ("prefix", 4, (0, 1)),
        ("prefix", 5, (0, 1)),
        ("prefix", 8, (0, 1, 2, 3)),
        ("suffix", 1, (0,)),
        ("suffix", 4, (2, 3)),
        ("suffix", 5, (3, 4)),
        ("middle", 3, (1,)),
        ("middle", 4, (1,)),
        ("middle", 6, (2, 3)),
        ("middle", 8, (3, 4)),
        ("middle", 12, (4, 5, 6, 7)),
        ("middle", 16, (5, 6, 7, 8, 9)),
        ("alternating", 2, (1,)),
        ("alternating", 4, (1, 3)),
        ("alternating", 7, (1, 3, 5)),
        ("all_but_head", 3, (0, 1, 2)),
    ],
)
def test_patterns_select_documented_indices(pattern: str, depth: int, expected: tuple[int, ...]):
    assert pattern_blocks(pattern, depth) == expected


def test_explicit_pattern_sorts_dedups_and_checks_range():
    assert pattern_blocks("explicit", 6, [4, 1, 4]) == (1, 4)
    with pytest.raises(CaseError, match=r"index 6 is out of range for depth=6 \(valid: 0..5\)"):
        pattern_blocks("explicit", 6, [1, 6])
    with pytest.raises(CaseError, match="needs block indices"):
        pattern_blocks("explicit", 6, [])


@pytest.mark.parametrize(("pattern", "depth"), [("middle", 2), ("alternating", 1)])
def test_patterns_that_cannot_apply_say_why(pattern: str, depth: int):
    with pytest.raises(CaseError, match=f"'{pattern}' needs depth >= "):
        pattern_blocks(pattern, depth)


def test_unknown_pattern_names_the_choices():
    with pytest.raises(CaseError, match="pattern='diagonal' is not one of: none, prefix"):
        pattern_blocks("diagonal", 4)


def test_segments_group_consecutive_blocks():
    assert segments(6, frozenset({1, 2, 4})) == [
        (False, [0]),
        (True, [1, 2]),
        (False, [3]),
        (True, [4]),
        (False, [5]),
    ]


def test_vocabularies_match_registries_and_docs():
    assert set(MECHANISMS) == set(MECHANISM_REGISTRY)
    assert set(MODELS) == set(FAMILIES)
    assert set(PATTERNS) == set(PATTERN_DOCS)


def test_case_id_and_round_trip():
    case = Case("mlp", 8, 512, 64, "middle", (3, 4), "requires_grad")
    assert case.id == "mlp-d8-w512-b64-middle-requires_grad-adamw-cpu-float32"
    assert Case.from_dict(case.to_dict()) == case
    explicit = Case("cnn", 6, 8, 4, "explicit", [4, 1], "no_grad", frozen_mode="eval", threads=2)
    assert explicit.frozen_blocks == (1, 4)
    assert explicit.id == "cnn-d6-w8-b4-blocks1.4-no_grad-eval-adamw-cpu-float32-t2"
    assert explicit.baseline() == Case("cnn", 6, 8, 4, threads=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mechanism": "freeze"}, "mechanism='freeze' is not one of: none, no_grad"),
        ({"depth": 0}, "depth=0 must be a positive integer"),
        ({"optimizer": "lion"}, "optimizer='lion' is not one of: adamw, sgd"),
        ({"pattern": "prefix"}, "every other pattern needs a mechanism"),
        ({"frozen_blocks": (9,), "pattern": "explicit", "mechanism": "no_grad"}, "out of range"),
    ],
)
def test_case_validation_names_field_value_and_choices(kwargs: dict[str, object], message: str):
    base: dict[str, object] = {"model": "mlp", "depth": 4, "width": 8, "batch_size": 2}
    with pytest.raises(CaseError, match=message.replace("(", r"\(")):
        Case(**{**base, **kwargs})  # type: ignore[arg-type]


def test_quick_profile_covers_every_model_pattern_and_mechanism():
    sweep = generate(PROFILES["quick"], Filters())
    cases = sweep.cases
    assert not sweep.skips
    assert {c.model for c in cases} == set(MODELS)
    assert {c.pattern for c in cases} >= set(PATTERNS) - {"explicit"}
    assert {c.mechanism for c in cases} == set(MECHANISMS)
    assert {c.optimizer for c in cases} == {"adamw", "sgd"}
    assert {c.frozen_mode for c in cases} == {"train", "eval"}
    assert any(c.scenario == "seed" for c in cases)
    assert len(cases) == len(set(cases))


def test_every_group_has_exactly_one_baseline():
    # The pairwise profile's rows are single cases: each is timed beside its baseline without
    # the baseline being a case of its own.
    for profile in (p for name, p in PROFILES.items() if name != "pairwise"):
        cases = generate(profile, Filters()).cases
        baselines = [c for c in cases if c.is_baseline]
        assert len(baselines) == len(set(baselines))
        assert {c.baseline() for c in cases} == set(baselines)


def test_filters_replace_axes_and_report_impossible_points():
    f = Filters(models=("mlp",), depths=(2,), patterns=("none", "middle"), mechanisms=("no_grad",),
                adapters=("none",), compiles=("off",), parallel=("none",))  # fmt: skip
    sweep = generate(PROFILES["quick"], f)
    cases, skips = sweep.cases, sweep.skips
    assert [c.id for c in cases] == [
        "mlp-d2-w64-b16-none-none-adamw-cpu-float32",
        "mlp-d2-w64-b16-none-none-sgd-cpu-float32",
    ]
    assert [s.id for s in skips] == [
        "mlp-d2-w64-b16-middle-adamw-cpu-float32",
        "mlp-d2-w64-b16-middle-sgd-cpu-float32",
    ]
    assert "needs depth >= 3" in skips[0].reason
    # pattern 'none' x no_grad is the baseline, once per group (2 optimizer groups).
    assert {(b.optimizer, p, m) for b, p, m in sweep.folded} == {
        ("adamw", "none", "no_grad"),
        ("sgd", "none", "no_grad"),
    }


def test_a_mechanism_none_with_frozen_patterns_is_folded_too():
    f = Filters(models=("cnn",), patterns=("none", "prefix"), mechanisms=("none", "no_grad"))
    sweep = generate(PROFILES["quick"], f)
    assert [(c.mechanism, c.frozen_mode) for c in sweep.cases] == [
        ("none", "train"),
        ("no_grad", "train"),
        ("no_grad", "eval"),
    ]
    assert {(p, m) for _, p, m in sweep.folded} == {("none", "no_grad"), ("prefix", "none")}


def test_explicit_blocks_filter():
    f = Filters(models=("mlp",), optimizers=("adamw",), blocks=(0, 2), mechanisms=("no_grad",),
                adapters=("none",), compiles=("off",), parallel=("none",))  # fmt: skip
    cases = generate(PROFILES["quick"], f).cases
    assert [c.id for c in cases] == [
        "mlp-d4-w64-b16-none-none-adamw-cpu-float32",
        "mlp-d4-w64-b16-blocks0.2-no_grad-adamw-cpu-float32",
    ]


def test_shard_keeps_cases_with_their_baseline():
    cases = generate(PROFILES["quick"], Filters()).cases
    parts = [shard(cases, i, 3) for i in range(3)]
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cases)
    # Groups larger than a shard's share are dealt case by case (issue 9: balance); every other
    # case stays with its baseline.
    split = plan_shards(cases, 3).split
    for p in parts:
        assert {c.baseline() for c in p if c.baseline() not in split} <= set(p)


def test_parse_list_errors_name_the_option():
    assert parse_list("--bench-model", "mlp, cnn", MODELS) == ("mlp", "cnn")
    with pytest.raises(CaseError, match="--bench-model='rnn' is not one of: mlp"):
        parse_list("--bench-model", "rnn", MODELS)
    with pytest.raises(CaseError, match="empty"):
        parse_list("--bench-model", "mlp,", MODELS)
    with pytest.raises(CaseError, match="-1 must be >= 1"):
        parse_ints("--bench-depth", "4,-1")


def test_quantiles_match_hand_values():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0


def test_median_ci_uses_binomial_order_statistics():
    # n=5 cannot reach 95% (1 - 2/32 = 0.9375); n=6 gives (min, max) at 1 - 2/64 = 0.969.
    assert stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert stats.median_ci([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == (1.0, 6.0)
    # n=10: j=2 covers 1 - 2*11/1024 = 0.979; j=3 only 1 - 2*56/1024 = 0.891.
    assert stats.median_ci([float(i) for i in range(1, 11)]) == (2.0, 9.0)


def test_interleaved_ratio_with_a_fake_clock(monkeypatch: pytest.MonkeyPatch):
    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 5.0, 5.0, 6.0])  # base 1s, case 2s; then case 2, base 1
    monkeypatch.setattr(stats.Clock, "now", lambda: next(ticks))
    calls: list[str] = []
    result = stats.interleaved_ratio(lambda: calls.append("c"), lambda: calls.append("b"), 2)
    assert calls == ["b", "c", "c", "b"]
    assert result.ratios == (2.0, 2.0)
    assert result.median == 2.0 and result.ci_low is None and result.pairs == 2


def test_the_type_checkers_case_fields_are_the_axis_table():
    """``spec.py`` spells the built-in axes out once more, for type checkers only (under
    ``TYPE_CHECKING``): the same names in the same order as the axis table, with its defaults."""
    import ast
    import dataclasses
    import inspect

    from bench_lib import axes
    from bench_lib.measuring import spec

    tree = ast.parse(inspect.getsource(spec))
    stub = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "_Fields")
    fields = [
        (s.target.id, None if s.value is None else ast.literal_eval(s.value))
        for s in stub.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    ]
    builtin = [a for a in axes.AXES.values() if a.effect == "" or a.name in dict(fields)]
    assert [name for name, _ in fields] == [a.name for a in builtin]
    for (name, default), a in zip(fields, builtin, strict=True):
        assert default == (None if a.required else a.default), name
    # And the Case built at run time has exactly the table's fields.
    assert [f.name for f in dataclasses.fields(spec.Case)] == list(axes.AXES)
