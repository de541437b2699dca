"""The identity of one measurement: a frozen, hashable :class:`Case`.

A ``Case`` is one point of the sweep. It is the grouping key of every result, the source of
the readable pytest id, and it round-trips through plain dicts so that it can travel through
pytest-benchmark's JSON (``params``) and back.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import axes as axis_table
from ..axes import AXES, AxisError

__all__ = [
    "Case",
    "CaseError",
    "check_choice",
    "depth_phrase",
    "set_block_counter",
]


class CaseError(AxisError):
    """A field of a :class:`Case` (or a sweep option) has a value outside its choices."""


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; else :class:`CaseError` naming all three."""
    options = tuple(choices)
    if value not in options:
        raise CaseError(f"{name}={value!r} is not one of: {', '.join(options)}")
    return value


#: How a Case counts its blocks: set by :mod:`.families` (which imports this module, so this
#: module must not import it), and imported with the measuring package.
_block_counter: list[Callable[[Case], int]] = []


def set_block_counter(count: Callable[[Case], int]) -> None:
    """Register how a case's blocks are counted (the families package does, on import)."""
    _block_counter[:] = [count]


def depth_phrase(n_blocks: int, depth: int | None = None) -> str:
    """``depth=4``, or ``depth=4 with 5 blocks`` where the family's block count differs."""
    if depth is None or depth == n_blocks:
        return f"depth={n_blocks}"
    return f"depth={depth} with {n_blocks} blocks"


_TYPES: dict[str, Any] = {
    "choice": str,
    "text": str,
    "int": int,
    "ints": tuple[int, ...],
    "strs": tuple[str, ...],
    "sizes": tuple[tuple[str, int], ...],
}


if TYPE_CHECKING:

    @dataclass(frozen=True)
    class _Fields:
        """The fields of :class:`Case`, for type checkers only: at run time they are the axes
        of :data:`bench_lib.axes.AXES`, in table order (a test keeps these annotations equal
        to the table's built-in axes); an axis declared outside the package is an attribute
        as well."""

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
        extra: tuple[tuple[str, int], ...] = ()
        factory: str = ""
        freeze: tuple[str, ...] = ()
        amp: str = "none"
        compile: str = "off"
        checkpoint: str = "off"
        adapter: str = "none"
        lora_rank: int = 0
        parallel: str = "none"
        world: int = 1

        def __getattr__(self, name: str) -> Any: ...

else:
    _Fields = object


class _CaseBase(_Fields):
    """The methods of :class:`Case`, whose fields are the axes of :data:`bench_lib.axes.AXES`.

    ``depth`` counts layers (a trainable head always follows them); the model's freezable blocks
    number :attr:`n_blocks` (``depth`` for the built-in stacks, ``depth + 1`` for the
    transformers families, whose embeddings or stem are block 0). ``frozen_blocks`` are block
    indices, already resolved from ``pattern`` (see ``patterns.pattern_blocks``); pattern
    ``names`` freezes the parameters whose names match the globs in ``freeze`` instead.
    ``factory`` is the ``MODULE:FUNCTION`` (or ``path.py:FUNCTION``) that builds a ``factory``
    model, so that any process can rebuild the case from it. ``parallel`` is the data-parallel
    set-up and ``world`` its number of ranks (1 without one); ``batch_size`` is then per rank.

    Raises :class:`CaseError` (a ``ValueError``) naming the field, the value and the choices.
    """

    def values(self) -> dict[str, Any]:
        """Every axis's value, by field name."""
        return {name: getattr(self, name) for name in AXES}

    def __post_init__(self) -> None:
        # Normalise so equal cases hash equally whatever the caller passed (list, unsorted).
        blocks = tuple(sorted({int(i) for i in self.frozen_blocks}))
        object.__setattr__(self, "frozen_blocks", blocks)
        extra = tuple(sorted((str(k), int(v)) for k, v in self.extra))
        object.__setattr__(self, "extra", extra)
        freeze = tuple(dict.fromkeys(str(g) for g in self.freeze))
        object.__setattr__(self, "freeze", freeze)
        values = self.values()
        try:
            axis_table.check_values(values)
        except AxisError as e:  # CaseError for callers that catch it (a usage error)
            raise CaseError(str(e)) from None
        n = self.n_blocks  # the family's count; a factory is called (and checked) here
        for i in blocks:
            if not 0 <= i < n:
                raise CaseError(
                    f"frozen block index {i} is out of range for "
                    f"{depth_phrase(n, values['depth'])} (valid: 0..{n - 1})"
                )
        if values["pattern"] not in ("none", "names") and not blocks:
            raise CaseError(
                f"pattern={values['pattern']!r} freezes no block at depth={values['depth']}"
            )

    @functools.cached_property
    def n_blocks(self) -> int:
        """The number of freezable blocks of this case's model, from its family (computed from
        the sizes; a factory is called once per size, on the meta device where it can be)."""
        return _block_counter[0](self)  # type: ignore[arg-type]

    @property
    def is_baseline(self) -> bool:
        """Nothing frozen and no adapter (pattern ``none`` with ``lora`` is LoRA on the whole
        model: a case, not the baseline)."""
        return self.mechanism == "none" and self.adapter == "none"

    def axis_off(self, axis: str) -> Case:
        """The twin of this case with axis ``axis`` (a step axis: ``amp``, ``compile``,
        ``checkpoint``) at its default: what the axis costs is timed against it."""
        return dataclasses.replace(self, **{axis: AXES[axis].default})  # type: ignore[type-var]

    def option(self, key: str, default: int) -> int:
        """A family-specific size (e.g. ``seq_len``, ``image_size``) carried in ``extra``."""
        return dict(self.extra).get(key, default)

    @property
    def is_parallel(self) -> bool:
        """Runs on ``world`` worker processes through torch.distributed."""
        return self.parallel != "none"

    def baseline(self) -> Case:
        """Its baseline: the axes whose role keeps them (model, sizes, optimizer, device, step
        set-up, parallel set-up and world size) and every other axis at its default: nothing
        frozen and no adapter (full fine-tuning of the same model)."""
        reset = {a.name: a.default for a in axis_table.baseline_axes()}
        return dataclasses.replace(self, **reset)  # type: ignore[type-var]

    @property
    def id(self) -> str:
        """Readable pytest id, e.g. ``mlp-d8-w512-b64-middle-requires_grad-adamw-cpu-float32``
        (a parallel case ends with its set-up and world size: ``...-float32-ddp-w2``): each
        axis's fragment (:attr:`bench_lib.axes.Axis.fragment`) in its ``id_rank`` order."""
        return axis_table.id_fragments(self.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        d = self.values()
        for name, a in AXES.items():
            if a.kind in ("ints", "strs"):
                d[name] = list(d[name])
            elif a.kind == "sizes":
                d[name] = dict(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Case:
        known = set(AXES)
        unknown = sorted(set(d) - known)
        if unknown:
            raise CaseError(f"unknown Case field(s) {unknown}; known: {', '.join(sorted(known))}")
        kw = dict(d)
        kw["frozen_blocks"] = tuple(kw.get("frozen_blocks", ()))
        extra = kw.get("extra", ())
        kw["extra"] = tuple(extra.items()) if isinstance(extra, Mapping) else tuple(extra)
        kw["freeze"] = tuple(kw.get("freeze", ()))
        return Case(**kw)


if TYPE_CHECKING:
    Case = _CaseBase
else:

    def _field(axis: axis_table.Axis) -> tuple[str, Any, Any]:
        if axis.required:  # model, depth, width, batch_size: given by every caller
            return (axis.name, _TYPES[axis.kind])
        return (axis.name, _TYPES[axis.kind], dataclasses.field(default=axis.default))

    Case = dataclasses.make_dataclass(
        "Case",
        [_field(a) for a in AXES.values()],
        bases=(_CaseBase,),
        frozen=True,
        namespace={"__module__": __name__, "__qualname__": "Case"},
    )
