"""Which timing design measures what training sees: each design's ratio against the ratio of
long interleaved blocks.

A training loop runs the same model step after step, with warm caches. A decision group
switches models every value, and a step right after a switch pays for the switch (cold caches,
allocator reuse), which pulls every ratio towards 1 when values are one step long. This module
times one case against its baseline both ways, in one run:

* **long blocks**: :data:`LONG_STEPS` consecutive steps of the baseline, then as many of the
  case (order alternating between rounds), the ratio of the blocks' means per round, the median
  over rounds: what a training loop sees;
* **designs** ``(value_steps, warm_steps)``: the group's rounds with those settings
  (:func:`.group.time_group`'s loop, fixed rounds, no stop rule).

``python -m bench_lib.measuring.design`` prints the agreement for a small and a large case of
each built-in family; ``tests/test_design.py`` fails when the chosen design leaves the
long-block ratio by more than the margin on a small case.
"""

from __future__ import annotations

import gc
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import group
from .caserun import release
from .patterns import pattern_blocks
from .spec import Case
from .stats import Clock
from .training import build_workload

__all__ = ["CASES", "LONG_STEPS", "DesignCheck", "check_design", "long_block_ratio", "main"]

#: Steps of each model in one long block.
LONG_STEPS = 50
#: Designs compared: (value steps, warm steps at each switch).
DESIGNS: tuple[tuple[int, int], ...] = ((1, 0), (1, 1), (2, 1), (4, 1), (8, 1))


def _case(model: str, depth: int, width: int, batch: int, **sizes: int) -> Case:
    base = Case(model, depth, width, batch, extra=tuple(sizes.items()))
    blocks = pattern_blocks("prefix", base.n_blocks)
    return Case(
        model, depth, width, batch, "prefix", blocks, "requires_grad", extra=tuple(sizes.items())
    )


#: A small and a large case of each family that runs on any machine (the prefix frozen by
#: ``requires_grad``, AdamW, 1 thread).
CASES: tuple[Callable[[], Case], ...] = (
    lambda: _case("mlp", 4, 64, 16),
    lambda: _case("mlp", 8, 256, 64),
    lambda: _case("transformer", 4, 32, 4, seq_len=16),
    lambda: _case("transformer", 8, 64, 8, seq_len=32),
    lambda: _case("cnn", 4, 8, 4, image_size=8),
    lambda: _case("cnn", 8, 16, 16, image_size=16),
    lambda: _case("bert", 2, 32, 2, seq_len=16),
    lambda: _case("bert", 4, 128, 8, seq_len=64),
)


def long_block_ratio(
    case_step: Callable[[], object], base_step: Callable[[], object], rounds: int
) -> float:
    """The median over ``rounds`` of (mean step of a block of the case) / (mean step of a block
    of the baseline), blocks of :data:`LONG_STEPS` steps after one untimed step each."""
    ratios = []
    for r in range(rounds):
        times = {}
        order = (("b", base_step), ("c", case_step))
        for name, step in order if r % 2 == 0 else tuple(reversed(order)):
            step()
            gc.disable()
            t0 = Clock.now()
            for _ in range(LONG_STEPS):
                step()
            times[name] = Clock.now() - t0
            gc.enable()
        ratios.append(times["c"] / times["b"])
    return statistics.median(ratios)


def _design_ratio(
    case_step: Callable[[], object],
    base_step: Callable[[], object],
    value_steps: int,
    warm_steps: int,
    rounds: int,
) -> float:
    old = group.VALUE_STEPS, group.WARM_STEPS
    group.VALUE_STEPS, group.WARM_STEPS = value_steps, warm_steps
    try:
        result = group.time_group(
            {"none": base_step, "case": case_step},
            {"none": True, "case": True},
            margin=0.0,
            cap_s=float("inf"),
            looks=(rounds,),
        )
    finally:
        group.VALUE_STEPS, group.WARM_STEPS = old
    return result.pair("case", "none").ratio


@dataclass(frozen=True)
class DesignCheck:
    """One case: the long-block ratio and each design's ratio."""

    case_id: str
    long_ratio: float
    ratios: dict[tuple[int, int], float]

    def error(self, design: tuple[int, int]) -> float:
        """How far a design's ratio is from the long-block ratio, relatively."""
        return self.ratios[design] / self.long_ratio - 1.0


def check_design(
    case: Case,
    designs: Sequence[tuple[int, int]] = DESIGNS,
    rounds: int = 24,
    long_rounds: int = 8,
) -> DesignCheck:
    """Time ``case`` against its baseline in long blocks and in each design, interleaved: long
    blocks before and after the designs (their ratio is the median of both halves)."""
    w = build_workload(case)
    b = build_workload(case.baseline())
    try:
        for _ in range(5):
            w.step()
            b.step()
        first = long_block_ratio(w.step, b.step, long_rounds // 2)
        ratios = {d: _design_ratio(w.step, b.step, d[0], d[1], rounds) for d in designs}
        second = long_block_ratio(w.step, b.step, long_rounds - long_rounds // 2)
    finally:
        del w, b
        release()
    return DesignCheck(case.id, (first + second) / 2, ratios)


def main(argv: Sequence[str] = ()) -> int:
    """Print each design's agreement with long blocks on :data:`CASES` (or the first N)."""
    import torch

    torch.set_num_threads(1)
    limit = int(argv[0]) if argv else len(CASES)
    header = "case".ljust(62) + "long  " + "  ".join(f"{v}+{w}".rjust(12) for v, w in DESIGNS)
    print(header)
    for make in CASES[:limit]:
        try:
            check = check_design(make())
        except Exception as e:  # a family whose extra is missing
            print(f"skipped: {type(e).__name__}: {e}")
            continue
        cells = "  ".join(
            f"{check.ratios[d]:.3f}({check.error(d):+.1%})".rjust(12) for d in DESIGNS
        )
        print(f"{check.case_id[:60].ljust(62)}{check.long_ratio:.3f} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
