"""The timing design measures what training sees: the decision groups' values (4 steps after
2 warm steps at each switch) give the ratio that long interleaved blocks of each model give,
within the margin; one-step values without a warm step do not need to (they were 9-12% off on
small models)."""

from __future__ import annotations

import pytest
import torch

from bench_lib.measuring import design, group


@pytest.mark.slow
def test_the_chosen_design_agrees_with_long_blocks_within_the_margin() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        chosen = (group.VALUE_STEPS, group.WARM_STEPS)
        check = design.check_design(design.CASES[0](), designs=(chosen,), rounds=24)
    finally:
        torch.set_num_threads(threads)
    assert abs(check.error(chosen)) <= group.default_margin("cpu"), check
