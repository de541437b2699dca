"""The timing design measures what training sees: the decision groups' values (4 steps after
2 warm steps at each switch) give the ratio that long interleaved blocks of each model give,
within the margin; one-step values without a warm step do not need to (they were 9-12% off on
small models)."""

from __future__ import annotations

import statistics

import pytest
import torch

from bench_lib.measuring import design, group


@pytest.mark.slow
def test_the_chosen_design_agrees_with_long_blocks_within_the_margin() -> None:
    """The long-block ratio is itself a measurement on a shared machine (one run put it 3%
    lower than another), so the agreement is the median of up to three checks: a design
    biased by the switch (one-step values were 9-12% off here) fails all three."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    chosen = (group.VALUE_STEPS, group.WARM_STEPS)
    margin = group.default_margin("cpu")
    errors: list[float] = []
    try:
        while len(errors) < 3 and sum(abs(e) <= margin for e in errors) < 2:
            check = design.check_design(design.CASES[0](), designs=(chosen,), rounds=24)
            errors.append(check.error(chosen))
    finally:
        torch.set_num_threads(threads)
    assert statistics.median(abs(e) for e in errors) <= margin, errors
