"""Frozen-layer patterns: a pattern name and a block count in, frozen block indices out.

Plain Python (no torch): the sweep resolves patterns at plan time, against the family's number
of blocks (:meth:`~bench_lib.measuring.families.base.Family.num_blocks`), which is ``depth`` for
the built-in stacks and ``depth + 1`` for the transformers families (their embeddings or stem
are block 0). Pattern ``names`` freezes parameters by name instead (``--bench-freeze``); it is
resolved against the model itself (:mod:`bench_lib.measuring.mechanisms.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..vocab import NAMES_PATTERN, PATTERN_CHOICES
from .spec import CaseError, depth_phrase

__all__ = ["NAMES_DOC", "PATTERN_DOCS", "pattern_blocks", "segments"]


class _TooFew(Exception):
    """A pattern needs ``minimum`` blocks (``why`` says for what)."""

    def __init__(self, minimum: int, why: str = "") -> None:
        super().__init__(minimum, why)
        self.minimum, self.why = minimum, why


def _prefix(depth: int) -> list[int]:
    return list(range(max(1, depth // 2)))


def _suffix(depth: int) -> list[int]:
    return list(range(depth - max(1, depth // 2), depth))


def _middle(depth: int) -> list[int]:
    if depth < 3:
        raise _TooFew(3, " (a trainable block on each side)")
    k = max(1, depth // 3)
    start = (depth - k) // 2
    return list(range(start, start + k))


def _alternating(depth: int) -> list[int]:
    if depth < 2:
        raise _TooFew(2)
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
#: Pattern ``names`` (``vocab.NAMES_PATTERN``), which freezes parameters rather than blocks.
NAMES_DOC = "the parameters whose names match the --bench-freeze globs (not whole blocks)"


def pattern_blocks(
    pattern: str, n_blocks: int, explicit: Sequence[int] = (), depth: int | None = None
) -> tuple[int, ...]:
    """Block indices frozen by ``pattern`` in a model of ``n_blocks`` blocks (``depth``, when
    given and different, only words the messages).

    Raises :class:`CaseError` for an unknown pattern, a block count the pattern cannot apply
    to, an explicit index outside ``0..n_blocks-1``, or pattern ``names`` (which freezes
    parameters, not blocks).
    """
    if pattern not in PATTERN_CHOICES:
        raise CaseError(f"pattern={pattern!r} is not one of: {', '.join(PATTERN_CHOICES)}")
    if n_blocks < 1:
        raise CaseError(f"depth={n_blocks} must be a positive integer")
    where = depth_phrase(n_blocks, depth)
    if pattern == "explicit":
        if not explicit:
            raise CaseError("pattern 'explicit' needs block indices (--bench-blocks 1,3)")
        bad = [i for i in explicit if not 0 <= i < n_blocks]
        if bad:
            raise CaseError(
                f"--bench-blocks index {bad[0]} is out of range for {where} "
                f"(valid: 0..{n_blocks - 1})"
            )
        return tuple(sorted(set(explicit)))
    if pattern == NAMES_PATTERN:
        raise CaseError("pattern 'names' freezes parameters by name (--bench-freeze), not blocks")
    try:
        return tuple(_PATTERNS[pattern](n_blocks))
    except _TooFew as e:
        need = (
            f"depth >= {e.minimum}"
            if depth is None or depth == n_blocks
            else f"{e.minimum} blocks or more"
        )
        raise CaseError(f"pattern {pattern!r} needs {need}{e.why}, got {where}") from None


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
