"""Frozen-layer patterns: a pattern name and a block count in, frozen block indices out.

Plain Python (no torch): the sweep resolves patterns at plan time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..vocab import PATTERNS
from .spec import CaseError

__all__ = ["PATTERN_DOCS", "pattern_blocks", "segments"]


def _prefix(depth: int) -> list[int]:
    return list(range(max(1, depth // 2)))


def _suffix(depth: int) -> list[int]:
    return list(range(depth - max(1, depth // 2), depth))


def _middle(depth: int) -> list[int]:
    if depth < 3:
        raise CaseError(
            f"pattern 'middle' needs depth >= 3 (a trainable block on each side), got depth={depth}"
        )
    k = max(1, depth // 3)
    start = (depth - k) // 2
    return list(range(start, start + k))


def _alternating(depth: int) -> list[int]:
    if depth < 2:
        raise CaseError(f"pattern 'alternating' needs depth >= 2, got depth={depth}")
    return list(range(1, depth, 2))


_PATTERNS: dict[str, Callable[[int], list[int]]] = {
    "none": lambda depth: [],
    "prefix": _prefix,
    "suffix": _suffix,
    "middle": _middle,
    "alternating": _alternating,
    "all_but_head": lambda depth: list(range(depth)),
}

PATTERN_DOCS: dict[str, str] = {
    "none": "nothing frozen (the baseline)",
    "prefix": "blocks 0 .. max(1, depth//2) - 1 (the first half)",
    "suffix": "the last max(1, depth//2) blocks (the second half)",
    "middle": "k = max(1, depth//3) blocks starting at (depth-k)//2 (the middle third); depth >= 3",
    "alternating": "the odd blocks 1, 3, 5, ... (every other block, block 0 trainable); depth >= 2",
    "all_but_head": "every block; only the head trains",
    "explicit": "the indices given with --bench-blocks",
}


def pattern_blocks(pattern: str, depth: int, explicit: Sequence[int] = ()) -> tuple[int, ...]:
    """Block indices frozen by ``pattern`` at ``depth``.

    Raises :class:`CaseError` for an unknown pattern, a depth the pattern cannot apply to, or an
    explicit index outside ``0..depth-1``.
    """
    if pattern not in PATTERNS:
        raise CaseError(f"pattern={pattern!r} is not one of: {', '.join(PATTERNS)}")
    if depth < 1:
        raise CaseError(f"depth={depth} must be a positive integer")
    if pattern == "explicit":
        if not explicit:
            raise CaseError("pattern 'explicit' needs block indices (--bench-blocks 1,3)")
        bad = [i for i in explicit if not 0 <= i < depth]
        if bad:
            raise CaseError(
                f"--bench-blocks index {bad[0]} is out of range for depth={depth} "
                f"(valid: 0..{depth - 1})"
            )
        return tuple(sorted(set(explicit)))
    return tuple(_PATTERNS[pattern](depth))


def segments(depth: int, frozen: frozenset[int]) -> list[tuple[bool, list[int]]]:
    """Runs of consecutive blocks with the same frozen state: ``[(is_frozen, [indices]), ...]``."""
    out: list[tuple[bool, list[int]]] = []
    for i in range(depth):
        f = i in frozen
        if out and out[-1][0] == f:
            out[-1][1].append(i)
        else:
            out.append((f, [i]))
    return out
