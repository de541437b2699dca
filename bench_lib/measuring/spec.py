"""The identity of one measurement: a frozen, hashable :class:`Case`.

A ``Case`` is one point of the sweep. It is the grouping key of every result, the source of
the readable pytest id, and it round-trips through plain dicts so that it can travel through
pytest-benchmark's JSON (``params``) and back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..vocab import (
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PATTERNS,
    SCENARIOS,
)

__all__ = ["Case", "CaseError", "check_choice"]


class CaseError(ValueError):
    """A field of a :class:`Case` (or a sweep option) has a value outside its choices."""


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; else :class:`CaseError` naming all three."""
    options = tuple(choices)
    if value not in options:
        raise CaseError(f"{name}={value!r} is not one of: {', '.join(options)}")
    return value


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CaseError(f"{name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class Case:
    """One point of the sweep.

    ``depth`` counts blocks (a trainable head always follows them). ``width`` is the hidden size
    (MLP, transformer ``d_model``) or channel count (CNN). ``frozen_blocks`` are block indices,
    already resolved from ``pattern`` for this depth (see ``freezing.pattern_blocks``).
    ``threads`` is the intra-op thread count pinned with ``torch.set_num_threads``.

    Raises :class:`CaseError` (a ``ValueError``) naming the field, the value and the choices.
    """

    model: str
    depth: int
    width: int
    batch_size: int
    pattern: str = "none"
    frozen_blocks: tuple[int, ...] = ()
    mechanism: str = "none"
    optimizer: str = "adamw"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    frozen_mode: str = "train"
    seed: int = 0
    scenario: str = "sweep"
    extra: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        check_choice("model", self.model, MODELS)
        check_choice("pattern", self.pattern, PATTERNS)
        check_choice("mechanism", self.mechanism, MECHANISMS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("device", self.device, DEVICES)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("frozen_mode", self.frozen_mode, FROZEN_MODES)
        check_choice("scenario", self.scenario, SCENARIOS)
        for name in ("depth", "width", "batch_size", "threads"):
            _positive(name, getattr(self, name))
        # Normalise so equal cases hash equally whatever the caller passed (list, unsorted).
        blocks = tuple(sorted({int(i) for i in self.frozen_blocks}))
        object.__setattr__(self, "frozen_blocks", blocks)
        object.__setattr__(self, "extra", tuple(sorted((str(k), int(v)) for k, v in self.extra)))
        for i in blocks:
            if not 0 <= i < self.depth:
                raise CaseError(
                    f"frozen block index {i} is out of range for depth={self.depth} "
                    f"(valid: 0..{self.depth - 1})"
                )
        if (self.pattern == "none") != (self.mechanism == "none"):
            raise CaseError(
                f"pattern={self.pattern!r} with mechanism={self.mechanism!r}: the baseline is "
                "pattern 'none' with mechanism 'none'; every other pattern needs a mechanism"
            )
        if self.pattern != "none" and not blocks:
            raise CaseError(f"pattern={self.pattern!r} freezes no block at depth={self.depth}")

    @property
    def is_baseline(self) -> bool:
        return self.mechanism == "none"

    def option(self, key: str, default: int) -> int:
        """A family-specific size (e.g. ``seq_len``, ``image_size``) carried in ``extra``."""
        return dict(self.extra).get(key, default)

    def baseline(self) -> Case:
        """Its baseline: same model, sizes, optimizer and device; nothing frozen."""
        return dataclasses.replace(
            self, pattern="none", frozen_blocks=(), mechanism="none", frozen_mode="train"
        )

    @property
    def id(self) -> str:
        """Readable pytest id, e.g. ``mlp-d8-w512-b64-middle-requires_grad-adamw-cpu-float32``."""
        pattern = self.pattern
        if pattern == "explicit":
            pattern = "blocks" + ".".join(str(i) for i in self.frozen_blocks)
        parts = [
            "seed" if self.scenario == "seed" else None,
            self.model,
            f"d{self.depth}",
            f"w{self.width}",
            f"b{self.batch_size}",
            pattern,
            self.mechanism,
            None if self.frozen_mode == "train" else "eval",
            self.optimizer,
            self.device,
            self.dtype,
            None if self.threads == 1 else f"t{self.threads}",
        ]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        d = dataclasses.asdict(self)
        d["frozen_blocks"] = list(self.frozen_blocks)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Case:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CaseError(f"unknown Case field(s) {unknown}; known: {', '.join(sorted(known))}")
        kw = dict(d)
        kw["frozen_blocks"] = tuple(kw.get("frozen_blocks", ()))
        extra = kw.get("extra", ())
        kw["extra"] = tuple(extra.items()) if isinstance(extra, Mapping) else tuple(extra)
        return cls(**kw)
