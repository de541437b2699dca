"""The precision summary against hand-computed values."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench_lib import precision


def _row(pattern: str, mechanism: str, parallel: str, widest: float, rounds: int,
         resolved: bool) -> dict[str, Any]:  # fmt: skip
    return {
        "status": "ok", "model": "mlp", "depth": 4, "pattern": pattern, "mechanism": mechanism,
        "parallel": parallel, "group_widest": widest, "group_rounds": rounds,
        "resolved": resolved, "margin": 0.05,
    }  # fmt: skip


def test_groups_by_set_up_with_noise_rounds_needed_and_reachable_margin() -> None:
    rows = [
        # One single-process group of two members (counted once), resolved at 4% in 16 rounds.
        _row("prefix", "requires_grad", "none", 0.04, 16, True),
        _row("prefix", "no_grad", "none", 0.04, 16, True),
        # One unresolved at 10% in 16 rounds: 16 * (0.10 / 0.05)^2 = 64 rounds would do.
        _row("middle", "requires_grad", "none", 0.10, 16, False),
        # A DDP group: 20% in 24 rounds needs 24 * 16 = 384.
        _row("prefix", "requires_grad", "ddp", 0.20, 24, False),
        # Not timed, or without a needed pair: not a group.
        {**_row("suffix", "no_grad", "none", 0.3, 8, False), "status": "error"},
        {**_row("suffix", "requires_grad", "none", 0.3, 8, False), "group_widest": None},
    ]
    single, ddp = precision.by_setup(rows)
    assert (single.setup, single.groups, single.resolved) == ("single process", 2, 1)
    assert single.median_width == pytest.approx(0.07)
    assert single.rounds_needed == pytest.approx((16 + 64) / 2)
    assert single.noise == pytest.approx((0.04 + 0.10) / 2 * math.sqrt(16) / 3.92)
    assert single.reachable == pytest.approx(0.04 + 0.9 * 0.06)  # the 90% quantile
    assert (ddp.setup, ddp.groups, ddp.resolved, ddp.rounds_needed) == ("ddp", 1, 0, 384)
    lines = precision.summary_lines(rows)
    assert lines[0] == "decision groups: 1 of 3 resolved (33%)"
    assert "ddp: 0 of 1 decision groups resolved (0%) at margin 5%" in lines[2]
    assert "resolving would take a median 384 rounds" in lines[2]
    assert precision.summary_lines([]) == []


def test_resolved_groups_that_spent_their_cap_across_an_edge_are_counted_as_borderline() -> None:
    rows = [
        {**_row("prefix", "requires_grad", "none", 0.03, 48, True), "group_stop": "borderline"},
        {**_row("middle", "requires_grad", "none", 0.03, 16, True), "group_stop": "settled"},
    ]
    (single,) = precision.by_setup(rows)
    assert (single.resolved, single.borderline) == (2, 1)
    assert "1 resolved with a pair still across an edge of the margin" in single.line()
