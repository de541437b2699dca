"""The identity of one measurement: a frozen, hashable :class:`Case`.

A ``Case`` is one point of the sweep. It is the grouping key of every result, the source of
the readable pytest id, and it round-trips through plain dicts so that it can travel through
pytest-benchmark's JSON (``params``) and back.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ..vocab import (
    ADAPTERS,
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PARALLEL,
    PATTERN_CHOICES,
    SCENARIOS,
    STEP_AXES,
)

__all__ = ["Case", "CaseError", "check_choice", "depth_phrase", "factory_label"]


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


def depth_phrase(n_blocks: int, depth: int | None = None) -> str:
    """``depth=4``, or ``depth=4 with 5 blocks`` where the family's block count differs."""
    if depth is None or depth == n_blocks:
        return f"depth={n_blocks}"
    return f"depth={depth} with {n_blocks} blocks"


def factory_label(spec: str) -> str:
    """How a case id names a factory: ``mymodule.build`` for ``mymodule:build``, and the file's
    stem for a path (``mine.build`` for ``path/to/mine.py:build``)."""
    target, _, function = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or "\\" in target:
        target = PurePath(target).stem
    return f"{target}.{function}"


@dataclass(frozen=True)
class Case:
    """One point of the sweep.

    ``depth`` counts layers (a trainable head always follows them); the model's freezable blocks
    number :attr:`n_blocks` (``depth`` for the built-in stacks, ``depth + 1`` for the
    transformers families, whose embeddings or stem are block 0). ``width`` is the hidden size
    (MLP, transformer ``d_model``) or channel count (CNN). ``frozen_blocks`` are block indices,
    already resolved from ``pattern`` for these blocks (see ``patterns.pattern_blocks``); pattern
    ``names`` freezes the parameters whose names match the globs in ``freeze`` instead.
    ``threads`` is the intra-op thread count pinned with ``torch.set_num_threads``. ``factory``
    is the ``MODULE:FUNCTION`` (or ``path.py:FUNCTION``) that builds a ``factory`` model, so that
    any process can rebuild the case from it.

    ``parallel`` is the data-parallel set-up (``none``: one process, the default) and ``world``
    its number of ranks (1 without one); ``batch_size`` is then per rank. The baseline keeps
    both: a parallel case is compared with the same set-up and world size, nothing frozen.

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
    factory: str = ""
    freeze: tuple[str, ...] = ()
    amp: str = "none"
    compile: str = "off"
    checkpoint: str = "off"
    adapter: str = "none"
    lora_rank: int = 0
    parallel: str = "none"
    world: int = 1

    def __post_init__(self) -> None:
        for axis, values in STEP_AXES.items():
            check_choice(axis, getattr(self, axis), values)
        check_choice("adapter", self.adapter, ADAPTERS)
        if self.adapter == "none" and self.lora_rank != 0:
            raise CaseError(f"lora_rank={self.lora_rank!r} needs adapter 'lora'")
        if self.adapter == "lora":
            _positive("lora_rank", self.lora_rank)
        check_choice("model", self.model, MODELS)
        check_choice("pattern", self.pattern, PATTERN_CHOICES)
        check_choice("mechanism", self.mechanism, MECHANISMS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("device", self.device, DEVICES)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("frozen_mode", self.frozen_mode, FROZEN_MODES)
        check_choice("scenario", self.scenario, SCENARIOS)
        check_choice("parallel", self.parallel, PARALLEL)
        for name in ("depth", "width", "batch_size", "threads", "world"):
            _positive(name, getattr(self, name))
        # Normalise so equal cases hash equally whatever the caller passed (list, unsorted).
        blocks = tuple(sorted({int(i) for i in self.frozen_blocks}))
        object.__setattr__(self, "frozen_blocks", blocks)
        object.__setattr__(self, "extra", tuple(sorted((str(k), int(v)) for k, v in self.extra)))
        object.__setattr__(self, "freeze", tuple(dict.fromkeys(str(g) for g in self.freeze)))
        if (self.model == "factory") != bool(self.factory):
            raise CaseError(
                f"model={self.model!r} with factory={self.factory!r}: model 'factory' needs "
                "a factory (--bench-model-factory MODULE:FUNCTION) and no other model takes one"
            )
        if (self.pattern == "names") != bool(self.freeze):
            raise CaseError(
                f"pattern={self.pattern!r} with freeze={list(self.freeze)}: pattern 'names' "
                "needs parameter-name globs (--bench-freeze) and no other pattern takes them"
            )
        if self.parallel == "none" and self.world != 1:
            raise CaseError(
                f"world={self.world} with parallel='none': a world size needs a parallel set-up "
                f"(--bench-parallel {', '.join(PARALLEL[1:])})"
            )
        n = self.n_blocks  # the family's count; a factory is called (and checked) here
        for i in blocks:
            if not 0 <= i < n:
                raise CaseError(
                    f"frozen block index {i} is out of range for "
                    f"{depth_phrase(n, self.depth)} (valid: 0..{n - 1})"
                )
        if (self.pattern == "none") != (self.mechanism == "none"):
            raise CaseError(
                f"pattern={self.pattern!r} with mechanism={self.mechanism!r}: the baseline is "
                "pattern 'none' with mechanism 'none'; every other pattern needs a mechanism"
            )
        if self.pattern == "names" and blocks:
            raise CaseError("pattern 'names' freezes parameters by name: frozen_blocks stay empty")
        if self.pattern not in ("none", "names") and not blocks:
            raise CaseError(f"pattern={self.pattern!r} freezes no block at depth={self.depth}")

    @functools.cached_property
    def n_blocks(self) -> int:
        """The number of freezable blocks of this case's model, from its family (computed from
        the sizes; a factory is called once per size, on the meta device where it can be)."""
        from .families import get_family  # families import this module

        return get_family(self.model).num_blocks(self)

    @property
    def is_baseline(self) -> bool:
        """Nothing frozen and no adapter (pattern ``none`` with ``lora`` is LoRA on the whole
        model: a case, not the baseline)."""
        return self.mechanism == "none" and self.adapter == "none"

    def axis_off(self, axis: str) -> Case:
        """The twin of this case with step axis ``axis`` (``amp``, ``compile``, ``checkpoint``)
        at its default: what the axis costs is timed against it."""
        default = STEP_AXES[axis][0]
        if axis == "amp":
            return dataclasses.replace(self, amp=default)
        if axis == "compile":
            return dataclasses.replace(self, compile=default)
        return dataclasses.replace(self, checkpoint=default)

    def option(self, key: str, default: int) -> int:
        """A family-specific size (e.g. ``seq_len``, ``image_size``) carried in ``extra``."""
        return dict(self.extra).get(key, default)

    @property
    def is_parallel(self) -> bool:
        """Runs on ``world`` worker processes through torch.distributed."""
        return self.parallel != "none"

    def baseline(self) -> Case:
        """Its baseline: same model, sizes, optimizer, device, step set-up (amp, compile,
        checkpoint), parallel set-up and world size; nothing frozen and no adapter (full
        fine-tuning of the same model)."""
        return dataclasses.replace(
            self,
            pattern="none",
            frozen_blocks=(),
            freeze=(),
            mechanism="none",
            frozen_mode="train",
            adapter="none",
            lora_rank=0,
        )

    @property
    def id(self) -> str:
        """Readable pytest id, e.g. ``mlp-d8-w512-b64-middle-requires_grad-adamw-cpu-float32``
        (a parallel case ends with its set-up and world size: ``...-float32-ddp-w2``)."""
        pattern = self.pattern
        if pattern == "explicit":
            pattern = "blocks" + ".".join(str(i) for i in self.frozen_blocks)
        parts = [
            "seed" if self.scenario == "seed" else None,
            f"factory:{factory_label(self.factory)}" if self.factory else self.model,
            f"d{self.depth}",
            f"w{self.width}",
            f"b{self.batch_size}",
            pattern,
            self.mechanism,
            None if self.frozen_mode == "train" else "eval",
            self.optimizer,
            self.device,
            self.dtype,
            None if self.amp == "none" else f"amp_{self.amp}",
            None if self.compile == "off" else "compiled",
            None if self.checkpoint == "off" else "ckpt",
            None if self.adapter == "none" else f"{self.adapter}{self.lora_rank}",
            None if self.threads == 1 else f"t{self.threads}",
            self.parallel if self.is_parallel else None,
            f"w{self.world}" if self.is_parallel else None,
        ]
        return "-".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        d = dataclasses.asdict(self)
        d["frozen_blocks"] = list(self.frozen_blocks)
        d["extra"] = dict(self.extra)
        d["freeze"] = list(self.freeze)
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
        kw["freeze"] = tuple(kw.get("freeze", ()))
        return cls(**kw)
