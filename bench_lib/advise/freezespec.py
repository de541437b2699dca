"""``--freeze SPEC``: a pattern name, block indices, or parameter-name globs (plain Python).

* a pattern name (:data:`FREEZE_PATTERNS`): resolved against the model's blocks as the suite
  resolves it (``prefix`` is the first half, ``middle`` the middle third, ...);
* block indices: ``0-5`` (inclusive), ``0,2,4``, or both mixed (``0-2,5``): pattern
  ``explicit`` (``--bench-pattern explicit --bench-blocks ...``);
* parameter-name globs, comma-separated (``'model.layers.[0-3].*'``): pattern ``names``
  (``--bench-freeze ...``), checked against the model's parameter names by the caller.

No spec means ``prefix``, and the screen says it was the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import usage_error

__all__ = ["DEFAULT_PATTERN", "FREEZE_PATTERNS", "FreezeSpec", "parse_freeze"]

#: The pattern names ``--freeze`` takes.
FREEZE_PATTERNS = ("prefix", "middle", "suffix", "alternating", "all_but_head")
DEFAULT_PATTERN = "prefix"
_INDICES = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
_GLOB_CHARS = set("*?[].")


@dataclass(frozen=True)
class FreezeSpec:
    """A parsed ``--freeze``: ``pattern`` is a suite pattern (a name of
    :data:`FREEZE_PATTERNS`, ``explicit`` or ``names``), ``blocks`` the frozen block indices
    (empty for ``names``), ``globs`` the parameter globs of ``names``."""

    text: str
    pattern: str
    blocks: tuple[int, ...] = ()
    globs: tuple[str, ...] = ()
    defaulted: bool = False

    def pytest_args(self) -> list[str]:
        """The ``--bench-*`` options that select the baseline and this frozen spec."""
        if self.pattern == "names":
            return ["--bench-pattern", "none,names", "--bench-freeze", ",".join(self.globs)]
        if self.pattern == "explicit":
            blocks = ",".join(str(i) for i in self.blocks)
            return ["--bench-pattern", "none,explicit", "--bench-blocks", blocks]
        return ["--bench-pattern", f"none,{self.pattern}"]

    def describe(self, n_blocks: int) -> str:
        """``prefix (the default): blocks 0-3 of 8`` and the like."""
        if self.pattern == "names":
            return f"parameters matching {', '.join(self.globs)}"
        default = " (the default)" if self.defaulted else ""
        where = f"blocks {ranges(self.blocks)} of {n_blocks}"
        return where if self.pattern == "explicit" else f"{self.pattern}{default}: {where}"


def ranges(indices: tuple[int, ...]) -> str:
    """``0-3,5``: sorted indices with consecutive runs joined."""
    out: list[str] = []
    for i in sorted(indices):
        if out and "-" not in out[-1].split(",")[-1] and int(out[-1]) == i - 1:
            out[-1] = f"{out[-1]}-{i}"
        elif out and "-" in out[-1] and int(out[-1].split("-")[1]) == i - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


def _indices(text: str, n_blocks: int) -> tuple[int, ...]:
    out: set[int] = set()
    for part in text.split(","):
        lo_text, _, hi_text = part.partition("-")
        lo = int(lo_text)
        hi = int(hi_text) if hi_text.strip() else lo
        if hi < lo:
            raise usage_error(f"--freeze={text!r}: range {part.strip()!r} runs backwards")
        for i in range(lo, hi + 1):
            if i >= n_blocks:
                raise usage_error(
                    f"--freeze={text!r}: block {i} is out of range for {n_blocks} blocks "
                    f"(valid: 0..{n_blocks - 1})"
                )
            out.add(i)
    return tuple(sorted(out))


def parse_freeze(text: str | None, n_blocks: int) -> FreezeSpec:
    """Parse ``--freeze`` for a model of ``n_blocks`` blocks. Raises a usage
    :class:`~.errors.AdviseError` naming the value and the choices: an unknown word, an index
    out of range, a pattern the block count cannot take (``middle`` needs 3 blocks)."""
    if text is None:
        blocks = _pattern(DEFAULT_PATTERN, n_blocks, DEFAULT_PATTERN)
        return FreezeSpec(DEFAULT_PATTERN, DEFAULT_PATTERN, blocks, defaulted=True)
    spec = text.strip()
    if spec in FREEZE_PATTERNS:
        return FreezeSpec(spec, spec, _pattern(spec, n_blocks, text))
    if _INDICES.match(spec):
        return FreezeSpec(spec, "explicit", _indices(spec, n_blocks))
    globs = tuple(g.strip() for g in spec.split(","))
    if not spec or any(not g for g in globs):
        raise usage_error(f"--freeze={text!r} is empty or has an empty item")
    for g in globs:
        if not _GLOB_CHARS & set(g):
            raise usage_error(
                f"--freeze={text!r}: {g!r} is not a pattern ({', '.join(FREEZE_PATTERNS)}), "
                "block indices (0-5 or 0,2,4) or a parameter-name glob (like 'bert.embeddings.*')"
            )
    return FreezeSpec(spec, "names", globs=tuple(dict.fromkeys(globs)))


def _pattern(name: str, n_blocks: int, text: str) -> tuple[int, ...]:
    # The suite's own resolution; imported here, since the measuring package brings torch.
    from ..measuring.patterns import pattern_blocks
    from ..measuring.spec import CaseError

    try:
        return pattern_blocks(name, n_blocks)
    except CaseError as e:
        raise usage_error(f"--freeze={text!r}: {e}") from None
