"""Setups: the rows that share a baseline's axes but the depth (one table, one set of figures).

:func:`setups` groups a tidy table's rows by setup; :func:`setup_title` and :func:`setup_slug`
name one in headings and in figure file names.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..axes import step_parts
from .format import Row, plural, records, slug
from .results import BASELINE_KEY, TIMES, is_missing, setup_key

__all__ = [
    "SETUP_COLUMNS",
    "blocks",
    "is_parallel",
    "setup_columns",
    "setup_slug",
    "setup_title",
    "setups",
]

#: The axes that make one "setup": the rows of one table and one set of figures (a baseline's
#: axes but the file and the depth, which the table's rows sweep).
SETUP_COLUMNS: tuple[str, ...] = tuple(a for a in BASELINE_KEY if a not in ("source", "depth"))


def setup_columns(frame: pd.DataFrame) -> list[str]:
    """:data:`SETUP_COLUMNS`, plus the file when one case id appears in two files."""
    columns = list(SETUP_COLUMNS)
    if frame["source"].nunique() > 1 and frame.duplicated(subset=["case_id"]).any():
        columns.append("source_label")
    return columns


def setups(frame: pd.DataFrame) -> list[tuple[tuple[Any, ...], list[Row]]]:
    """Rows grouped by setup, in the order they first appear."""
    columns = setup_columns(frame)
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in records(frame):
        groups.setdefault(setup_key(r, columns), []).append(r)
    return list(groups.items())


def _step_axes(row: Row) -> list[tuple[str, str]]:
    """The step axes ``row`` sets, as (title, slug) pairs: ``("autocast bf16", "amp_bf16")``,
    from the axis table (an axis declared outside the package included)."""
    return step_parts({k: None if is_missing(v) else v for k, v in row.items()})


def setup_title(row: Row, with_source: bool = False) -> str:
    parts = [("seed scenario: " if row.get("scenario") == "seed" else "") + str(row["model"])]
    parts += [f"width {row['width']}", f"batch {row['batch_size']}"]
    if not is_missing(row.get("seq_len")):
        parts.append(f"sequence {int(row['seq_len'])}")
    if not is_missing(row.get("image_size")):
        parts.append(f"image {int(row['image_size'])}{TIMES}{int(row['image_size'])}")
    parts += [str(row["optimizer"]), str(row["device"]), str(row["dtype"])]
    parts.append(plural(int(row["threads"]), "thread"))
    if row.get("seed") not in (0, None):
        parts.append(f"seed {row['seed']}")
    parts += [title for title, _ in _step_axes(row)]
    if is_parallel(row):
        parts.append(f"{row['parallel']} on {plural(int(row['world_size']), 'rank')}")
    if with_source:
        parts.append(str(row["source_label"]))
    return " · ".join(parts)


def is_parallel(row: Row) -> bool:
    """The row is a case with a parallel set-up (files before the axis have none)."""
    value = row.get("parallel")
    return not is_missing(value) and value != "none"


def setup_slug(row: Row, with_source: bool = False) -> str:
    parts = [
        "seed" if row.get("scenario") == "seed" else "",
        str(row["model"]),
        f"w{row['width']}",
        f"b{row['batch_size']}",
    ]
    for key, prefix in (("seq_len", "s"), ("image_size", "i")):
        if not is_missing(row.get(key)):
            parts.append(f"{prefix}{int(row[key])}")
    parts += [str(row["optimizer"]), str(row["device"]), str(row["dtype"]), f"t{row['threads']}"]
    if row.get("seed") not in (0, None):
        parts.append(f"seed{row['seed']}")
    parts += [fragment for _, fragment in _step_axes(row)]
    if is_parallel(row):
        parts.append(f"{row['parallel']}-w{int(row['world_size'])}")
    if with_source:
        parts.append(str(row["source_label"]))
    return slug("-".join(p for p in parts if p))


def blocks(row: Row) -> str:
    """The frozen block indices as ``0, 2``, or ``—`` for none."""
    value: Any = row.get("frozen_blocks")
    if is_missing(value) or not len(value):
        return "—"
    return ", ".join(str(b) for b in value)
