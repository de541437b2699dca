"""Decision groups against a fake clock: the stop rule resolves identical twins as equivalent,
a member slower by twice the margin as distinct, stops an unresolvable group at its cap, and
calls identical twins distinct in at most 5% of groups."""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Callable, Iterator

import pytest

from bench_lib.measuring import group, stats
from bench_lib.measuring.group import classify, time_group, williams_orders


class FakeClock:
    """Time advances only when a fake step runs: its cost times lognormal noise."""

    def __init__(self, seed: int, noise: float) -> None:
        self.t = 0.0
        self.rng = random.Random(seed)
        self.noise = noise

    def now(self) -> float:
        return self.t

    def step(self, cost: float) -> Callable[[], None]:
        def run() -> None:
            self.t += cost * self.rng.lognormvariate(0.0, self.noise)

        return run


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, float], FakeClock]]:
    def make(seed: int, noise: float) -> FakeClock:
        clock = FakeClock(seed, noise)
        monkeypatch.setattr(stats.Clock, "now", clock.now)
        # The simulations run thousands of fake rounds: no collection between them.
        monkeypatch.setattr(group.gc, "collect", lambda *generation: 0)
        return clock

    yield make


def test_williams_orders_balance_carry_over():
    for n in range(2, 8):
        follows = collections.Counter()
        for order in williams_orders(n, seed=n):
            follows.update(itertools.pairwise(order))
        assert len(follows) == n * (n - 1)  # every member follows every other ...
        assert len(set(follows.values())) == 1  # ... equally often


def test_identical_twins_resolve_as_equivalent(fake):
    clock = fake(1, 0.05)
    steps = {"base": clock.step(0.01), "twin": clock.step(0.01)}
    result = time_group(steps, {"base": True, "twin": True}, margin=0.05, cap_s=1e9)
    assert result.resolved
    assert classify(result.pair("twin", "base"), 0.05) == "equivalent"
    assert result.rounds in group.LOOKS
    assert result.stop == "settled" and result.borderline == 0


def test_rounds_collect_only_the_young_generations(fake, monkeypatch):
    """Between rounds gc collects what a round left (young), never the whole process: a full
    collection walked every long-lived object, 0.17 s a round once transformers was imported."""
    clock = fake(1, 0.05)
    calls: list[tuple[int, ...]] = []
    monkeypatch.setattr(group.gc, "collect", lambda *generation: calls.append(generation) or 0)
    steps = {"base": clock.step(0.01), "twin": clock.step(0.01)}
    result = time_group(steps, {"base": True, "twin": True}, margin=0.05, cap_s=1e9)
    assert len(calls) == result.rounds
    assert set(calls) == {(group.YOUNG,)} and group.YOUNG < 2


def test_a_member_slower_by_twice_the_margin_is_distinct(fake):
    clock = fake(2, 0.05)
    steps = {"base": clock.step(0.01), "slow": clock.step(0.011)}  # +10% = 2 x margin
    result = time_group(steps, {"base": True, "slow": True}, margin=0.05, cap_s=1e9)
    assert result.resolved
    pair = result.pair("slow", "base")
    assert classify(pair, 0.05) == "distinct"
    assert pair.low is not None and pair.low > 1.0


def test_a_group_that_cannot_resolve_stops_at_its_cap(fake):
    # A round costs 12 fake steps of 0.01 s: after 24 rounds (2.9 s) the next look, 32, would
    # end at 3.8 s, past the cap of 3.5 s; so the group stops at 24, and never overruns it.
    clock = fake(3, 0.12)
    steps = {"base": clock.step(0.01), "m": clock.step(0.01)}
    result = time_group(steps, {"base": True, "m": True}, margin=0.05, cap_s=3.5)
    assert not result.resolved
    assert result.widest > 0.05
    assert result.rounds == 24  # stopped by the cap, at a look
    assert result.seconds <= 3.5
    assert result.stop == "cap"


def test_a_pair_across_an_edge_of_the_margin_runs_on_until_it_clears_or_the_cap(fake):
    # 3% apart: resolved after a few rounds, but its interval crosses 0.95 at first; the
    # rounds go on until it lies inside 1 +/- margin, so the call is the one more rounds make.
    clock = fake(5, 0.05)
    steps = {"base": clock.step(0.01), "near": clock.step(0.0097)}
    result = time_group(steps, {"base": True, "near": True}, margin=0.05, cap_s=1e9)
    assert result.resolved and result.stop == "settled"
    assert classify(result.pair("base", "near"), 0.05) == "equivalent"
    # At the edge itself (5% apart) it never clears: the cap stops it, resolved, borderline.
    clock = fake(6, 0.05)
    steps = {"base": clock.step(0.01), "edge": clock.step(0.0105)}
    result = time_group(steps, {"base": True, "edge": True}, margin=0.05, cap_s=4.0)
    assert result.resolved and result.stop == "borderline" and result.borderline == 1
    assert result.rounds > group.LOOKS[0]
    assert group.crosses_edge(result.pair("edge", "base"), 0.05)


def test_with_the_edge_rule_a_pair_3_percent_apart_is_called_equivalent_reliably(fake):
    """The rule's point: a true 3% difference, inside the margin, got an interval crossing
    0.95 in about half the groups that stopped at the first resolved look (so another run made
    the other call); going on until the interval clears calls it equivalent in at least 95%."""
    calls = collections.Counter()
    for seed in range(100):
        clock = fake(500 + seed, 0.05)
        steps = {"a": clock.step(0.01), "b": clock.step(0.0097)}
        result = time_group(steps, dict.fromkeys(steps, True), margin=0.05, cap_s=1e9)
        calls[classify(result.pair("b", "a"), 0.05)] += 1
    assert calls["equivalent"] >= 95, calls


def test_invalid_members_make_no_needed_pair(fake):
    clock = fake(4, 0.05)
    steps = {"base": clock.step(0.01), "cut": clock.step(0.005), "ok": clock.step(0.01)}
    result = time_group(steps, {"base": True, "cut": False, "ok": True}, margin=0.05, cap_s=1e9)
    assert all("cut" not in pair for pair in result.needed)


def test_identical_twins_are_called_distinct_in_at_most_5_percent_of_groups(fake):
    distinct = 0
    groups = 400
    for seed in range(groups):
        clock = fake(100 + seed, 0.05)
        steps = {"a": clock.step(0.01), "b": clock.step(0.01), "c": clock.step(0.01)}
        result = time_group(steps, dict.fromkeys(steps, True), margin=0.05, cap_s=1e9)
        if any(classify(result.pair(a, b), 0.05) == "distinct" for a, b in result.needed):
            distinct += 1
    assert distinct / groups <= 0.05, distinct


# ------------------------------------------------------------------- members alive at once


def test_members_that_do_not_fit_beside_the_baseline_are_timed_in_chunks() -> None:
    """The baseline's measured footprint sizes how many members may be alive at once: with room
    for two beside it, four members are started, timed beside the baseline and closed two at a
    time, never more than three alive, and each still gets its values and its baseline pair."""
    from bench_lib.measuring.budget import Budget
    from bench_lib.measuring.launcher import launcher_for
    from bench_lib.measuring.spec import Case

    mechanisms = ("no_grad", "requires_grad", "optimizer_only", "backward_inputs")
    cases = [Case("mlp", 4, 16, 8, "prefix", (0, 1), m) for m in mechanisms]
    budget = Budget(group_cap_s=2.0, target_time_s=1e-3, fixed_rounds=8)
    alive: set[str] = set()
    most = 0
    # Before and after the baseline: a 1,000-byte footprint, then room for two (0.8 * 3,000).
    readings = iter([4_000, 3_000])

    def free(device: str) -> int:
        return next(readings)

    def start(case: Case):  # type: ignore[no-untyped-def]
        nonlocal most
        run = launcher_for(case).start(case, budget)
        alive.add(case.id)
        most = max(most, len(alive))
        close = run.close
        run.close = lambda: (alive.discard(case.id), close())  # type: ignore[method-assign]
        return run

    out = group.time_members(cases, budget, start, free=free)
    assert most == 3 and not alive
    summary = out[cases[0]].summary
    assert summary["timing_design"].startswith("in 2 chunks of up to 2 beside the baseline")
    assert summary["group_rounds"] == 16
    for c in cases:
        t = out[c]
        assert t.error is None and len(t.values) == 8 and "none" in t.pairs
        assert len(t.ratio_samples) == 8


def test_chunk_size_fits_the_free_memory() -> None:
    assert group.chunk_size(footprint=1_000, free=10_000, others=5) == 5
    assert group.chunk_size(footprint=1_000, free=3_000, others=5) == 2
    assert group.chunk_size(footprint=1_000, free=500, others=5) == 1


def test_a_run_that_fails_in_the_rounds_fails_the_members_timed_with_it() -> None:
    """A member's run that raises in a timed value (its workers died) fails every member alive
    in those rounds, with the reason, instead of escaping from the group."""
    from bench_lib.measuring.budget import Budget
    from bench_lib.measuring.launcher import launcher_for
    from bench_lib.measuring.spec import Case

    cases = [Case("mlp", 2, 8, 4, "prefix", (0,), m) for m in ("no_grad", "requires_grad")]
    budget = Budget(group_cap_s=2.0, target_time_s=1e-3, fixed_rounds=4)

    def start(case: Case):  # type: ignore[no-untyped-def]
        run = launcher_for(case).start(case, budget)
        if case.mechanism == "no_grad":

            def dead(warm: int, steps: int) -> float:
                raise RuntimeError("rank 1 (pid 7) killed by SIGKILL during 'value'")

            run.value = dead  # type: ignore[method-assign]
        return run

    out = group.time_members(cases, budget, start)
    for t in out.values():
        assert t.error is not None and "killed by SIGKILL during 'value'" in t.error
        assert t.error.startswith("the group's timed rounds failed")
        assert not t.values


def test_each_members_values_last_at_least_8_ms() -> None:
    assert group.steps_per_value(0.0005) == 16  # 8 ms / 0.5 ms
    assert group.steps_per_value(0.0001) == group.MAX_VALUE_STEPS  # 80 wanted, 32 at most
    assert group.steps_per_value(0.005) == group.VALUE_STEPS  # 2 would do: 4 at least
    assert group.steps_per_value(0.0) == group.VALUE_STEPS
    # Each member its own length; a long step anywhere makes one-step values for all.
    assert group._value_shape({"a": 0.0005, "b": 0.002}) == ({"a": 16, "b": 4}, group.WARM_STEPS)
    assert group._value_shape({"a": 0.0005, "b": group.LONG_STEP_S}) == ({"a": 1, "b": 1}, 0)
    label = group.design_label(0, 0.05, 8.0, [4, 16])
    assert "values of 4-16 steps by member (at least 8 ms each) after 2 warm step(s)" in label


def test_members_with_values_of_different_lengths_pair_in_seconds_per_step(fake):
    clock = fake(7, 0.02)
    steps = {"fast": clock.step(0.0005), "slow": clock.step(0.002)}
    result = time_group(steps, dict.fromkeys(steps, True), margin=0.05, cap_s=1e9,
                        value_steps={"fast": 16, "slow": 4})  # fmt: skip
    assert 3.8 < result.pair("slow", "fast").ratio < 4.2
