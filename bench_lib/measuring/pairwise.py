"""A pairwise covering array over every axis, generated from the axis table and its
constraints: every value of any axis meets every value of every other axis in at least one
row, at tiny sizes. It is the ``pairwise`` profile (:mod:`.profiles`), run in smoke mode by
``tests/test_pairwise.py`` to show that every combination runs or says why not.

Axes enter with all their values when they are choices, and with representative values when
they are integers (a world size beside each parallel set-up, a LoRA rank beside the adapter).
Some axes are derived rather than covered: the sizes (tiny, per family), the frozen blocks (from
the pattern), the globs (pattern ``names``), the factory (model ``factory``). A pair that no
valid row can hold (pattern ``none`` with a freeze mechanism, scenario ``seed`` with a model
other than ``xy``) is left out; :func:`covering_array` says which.

The construction is greedy (AETG-like, deterministic): each new row starts from the first
uncovered pair and fills the other axes, one at a time in a fixed order, with the value that
covers the most uncovered pairs, among the values that keep the row completable to a valid
one. Ties go to the cheaper value (an axis's default first), which keeps compiled and parallel
rows few.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import axes as axis_table
from ..axes import AXES

__all__ = ["PAIRWISE_SIZES", "Pairwise", "covered_pairs", "covering_array", "pairwise_axes"]

#: Tiny sizes per family: depth, width, batch and family sizes.
PAIRWISE_SIZES: dict[str, tuple[int, int, int, tuple[tuple[str, int], ...]]] = {
    "mlp": (4, 16, 4, ()),
    "transformer": (4, 16, 2, (("seq_len", 8),)),
    "cnn": (4, 8, 4, (("image_size", 8),)),
    "xy": (4, 16, 2, (("seq_len", 8),)),
    "resnet": (2, 8, 2, (("image_size", 32),)),
    "vit": (2, 32, 2, (("image_size", 16), ("patch_size", 4))),
    "bert": (2, 32, 2, (("seq_len", 8),)),
    "gpt2": (2, 32, 2, (("seq_len", 8),)),
    "factory": (2, 8, 2, (("image_size", 16),)),
}
#: The example factory, for rows of model ``factory``.
PAIRWISE_FACTORY = "benchmarks.example_factory:build"
#: The globs of pattern ``names`` in the rows: every weight (so that module-level mechanisms,
#: which act on whole modules, are the declared skip for globs that leave biases out).
PAIRWISE_GLOBS = ("*.weight",)
#: Representative values of the integer axes (the derived ones take their own).
_INT_VALUES: dict[str, tuple[int, ...]] = {"threads": (1, 2), "seed": (0, 1)}
#: Axes filled from others rather than covered.
_DERIVED = ("depth", "width", "batch_size", "frozen_blocks", "extra", "factory", "freeze")
#: The dependent axes' values beside a non-default parent.
_DEPENDENT = {"lora_rank": 4, "world": 2}


def pairwise_axes(devices: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """The covered axes with their values (``device`` limited to ``devices``)."""
    out: dict[str, tuple[Any, ...]] = {}
    for a in AXES.values():
        if a.name in _DERIVED or a.name in _DEPENDENT:
            continue
        if a.name == "device":
            out[a.name] = tuple(d for d in a.values if d in devices)
        elif a.kind == "choice":
            out[a.name] = a.values
        elif a.name in _INT_VALUES:
            out[a.name] = _INT_VALUES[a.name]
        else:
            out[a.name] = a.grid_values
    return out


def complete(row: Mapping[str, Any]) -> dict[str, Any]:
    """A full set of axis values from a row of covered axes: tiny sizes for the model, the
    derived axes, and the dependent axes beside their parents."""
    values = {a.name: a.default for a in AXES.values()}
    values.update(row)
    depth, width, batch, extra = PAIRWISE_SIZES[values["model"]]
    values.update(depth=depth, width=width, batch_size=batch, extra=extra)
    values["factory"] = PAIRWISE_FACTORY if values["model"] == "factory" else ""
    values["freeze"] = PAIRWISE_GLOBS if values["pattern"] == "names" else ()
    # Any block satisfies the constraints; the sweep resolves the real ones from the pattern.
    values["frozen_blocks"] = () if values["pattern"] in ("none", "names") else (0,)
    for name, value in _DEPENDENT.items():
        parent = AXES[AXES[name].depends_on]
        values[name] = AXES[name].default if values[parent.name] == parent.default else value
    return values


def _valid(row: Mapping[str, Any]) -> bool:
    return axis_table.constraint_error(complete(row)) is None


def _completable(partial: Mapping[str, Any], space: Mapping[str, tuple[Any, ...]]) -> bool:
    """Whether ``partial`` extends to a valid row: the unassigned axes at their first value, or
    with one or two of them changed (the constraints tie at most two axes together)."""
    free = [a for a in space if a not in partial]
    base = {**{a: space[a][0] for a in free}, **partial}
    if _valid(base):
        return True
    for a in free:
        for v in space[a][1:]:
            if _valid({**base, a: v}):
                return True
    for a, b in itertools.combinations(free, 2):
        for va, vb in itertools.product(space[a], space[b]):
            if _valid({**base, a: va, b: vb}):
                return True
    return False


Pair = tuple[tuple[str, Any], tuple[str, Any]]


def _pairs(row: Mapping[str, Any], names: Sequence[str]) -> set[Pair]:
    return {
        ((a, row[a]), (b, row[b]))
        for a, b in itertools.combinations(names, 2)
        if a in row and b in row
    }


def covered_pairs(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> set[Pair]:
    """Every pair of (axis, value) that ``rows`` hold."""
    out: set[Pair] = set()
    for r in rows:
        out |= _pairs(r, names)
    return out


@dataclass(frozen=True)
class Pairwise:
    """A covering array: its rows (covered axes only), the pairs it had to cover, and the pairs
    no valid row can hold."""

    rows: list[dict[str, Any]]
    required: set[Pair]
    impossible: set[Pair]
    axes: dict[str, tuple[Any, ...]]


def covering_array(devices: Sequence[str] = ("cpu",)) -> Pairwise:
    """The pairwise covering array over every axis on ``devices`` (deterministic)."""
    space = pairwise_axes(devices)
    names = list(space)
    required: set[Pair] = set()
    impossible: set[Pair] = set()
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(space[a], space[b]):
            pair = ((a, va), (b, vb))
            (required if _completable({a: va, b: vb}, space) else impossible).add(pair)
    uncovered = set(required)
    rows: list[dict[str, Any]] = []
    order = sorted(required, key=repr)
    while uncovered:
        first = next(p for p in order if p in uncovered)
        row: dict[str, Any] = dict(first)
        for axis in names:
            if axis in row:
                continue
            best: tuple[int, int] | None = None
            choice = None
            for rank, v in enumerate(space[axis]):
                trial = {**row, axis: v}
                if not _completable(trial, space):
                    continue
                gain = len(_pairs(trial, names) & uncovered)
                key = (gain, -rank)
                if best is None or key > best:
                    best, choice = key, v
            row[axis] = choice
        assert _valid(row), row
        uncovered -= _pairs(row, names)
        rows.append(row)
    return Pairwise(rows, required, impossible, space)
