"""What the step-axis findings share: the axes a row sets, and each such row's twin in the
same run with the step axes at their defaults (the same case, eager float32 step)."""

from __future__ import annotations

from typing import Any

from ...axes import step_axes, step_parts
from ..format import Row
from ..results import IDENTITY_AXES, has_adapter, has_step_axis, is_missing, setup_key
from . import Facts

__all__ = ["axis_label", "eager_twins", "step_rows"]

_EAGER_KEY = ("source", *(a for a in IDENTITY_AXES if a not in step_axes()))


def axis_label(row: Row) -> str:
    """``"autocast bf16"``, ``"compiled"``, ``"checkpointed"`` (joined with ``+``): each step
    axis's title from the axis table (an axis declared outside the package included)."""
    values: dict[str, Any] = {k: None if is_missing(v) else v for k, v in row.items()}
    return " + ".join(title for title, _ in step_parts(values))


def step_rows(f: Facts, *, failed: bool = False) -> list[Row]:
    """The rows with a step axis (no adapter), failed ones too if ``failed``."""
    pool = f.ok + f.failed if failed else f.ok
    return [r for r in pool if has_step_axis(r) and not has_adapter(r)]


def eager_twins(f: Facts, rows: list[Row]) -> list[tuple[Row, Row]]:
    """Each of ``rows`` with the measured row of the same case and file with every step axis
    at its default (the eager float32 step), where there is one."""
    eager = {
        setup_key(r, _EAGER_KEY): r for r in f.ok if not has_step_axis(r) and not has_adapter(r)
    }
    out = []
    for r in rows:
        twin = eager.get(setup_key(r, _EAGER_KEY))
        if twin is not None:
            out.append((r, twin))
    return out
