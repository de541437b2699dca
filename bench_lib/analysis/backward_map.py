"""The backward map: what backward did to each block, one figure per family.

Drawn from the records' ``block_flow`` (one code per block, measured in the validity check: see
``bench_lib/measuring/verify.py``). Blocks run along the x axis, one row per pattern x mechanism
(with the step axes a case sets, such as ``lora`` or ``eval``, named in its label), and each
cell is coloured by its code and carries its glyph. One figure shows one set-up (one process, or
a parallel set-up with its world size) and one depth, both named in its title: of a family's
rows with a measured ``block_flow``, the single-process ones when there are any, at the depth
with the most rows (the deepest on a tie). Rows whose flow was not measured (an ``error``
verdict, a parallel case) are drawn as a hatched ``n/a`` row, never left out. The report
(:func:`bench_lib.analysis.tables.family_map`) passes the rows of one eager float32
single-process set-up and names it in the title.

Like :mod:`.plots`, figures are built with ``matplotlib.figure.Figure`` directly (Agg, no
pyplot); the legend of the codes sits outside the axes, below them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib's is imported: no GUI, ever

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ..vocab import MECHANISMS, PATTERN_CHOICES

__all__ = [
    "CODES",
    "NOT_MEASURED",
    "BackwardMap",
    "backward_map",
    "draw_backward_map",
    "map_figure",
]

#: The codes of a ``block_flow`` cell (the measuring side's ``verify.FLOW_CODES``, which a test
#: keeps equal): code -> (glyph, colour, legend text).
CODES: dict[str, tuple[str, str, str]] = {
    "wx": ("wx", "#2b8cbe", "weights and input gradient"),
    "w": ("w", "#7bccc4", "weights only"),
    "x": ("x", "#bae4bc", "input gradient only (dX, no dW)"),
    "none": ("·", "#f0f0f0", "not in the graph"),
    "drift": ("≈", "#fdd49e", "rounding drift (caveat)"),
    "starved": ("✗ s", "#d7301f", "trainable but starved"),
    "moved": ("✗ m", "#b30000", "frozen but moved"),
    "buffers": ("✗ b", "#ef6548", "buffers changed"),
}
#: The code of a row whose flow was not measured.
NOT_MEASURED = "n/a"
_NA_STYLE = ("n/a", "#bdbdbd", "not measured (error, parallel)")
#: Step axes named in a row's label when a case sets them: field -> default.
_VARIANTS: dict[str, Any] = {
    "adapter": "none",
    "frozen_mode": "train",
    "amp": "none",
    "compile": "off",
    "checkpoint": "off",
}


@dataclass(frozen=True)
class BackwardMap:
    """What one map shows: its title, its row labels (top to bottom) and each row's codes
    (:data:`CODES` keys, or :data:`NOT_MEASURED` for every cell of a row not measured)."""

    model: str
    depth: int
    setup: str
    title: str
    labels: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]

    def text(self) -> str:
        """The map as plain text (one line per row), for a terminal."""
        width = max((len(s) for s in self.labels), default=0)
        return "\n".join(
            [self.title]
            + [
                f"{label:<{width}}  {' '.join(f'{c:>7}' for c in row)}"
                for label, row in zip(self.labels, self.cells, strict=True)
            ]
        )


def _setup(row: Mapping[str, Any]) -> str:
    parallel = row.get("parallel") or "none"
    return "one process" if parallel == "none" else f"{parallel} x{row.get('world_size') or 1}"


def _label(row: Mapping[str, Any]) -> str:
    extras = []
    for name, default in _VARIANTS.items():
        value = row.get(name)
        if value is not None and value != default:
            extras.append(str(value) if name in ("adapter", "frozen_mode") else f"{name} {value}")
    suffix = f" ({', '.join(extras)})" if extras else ""
    return f"{row.get('pattern')} / {row.get('mechanism')}{suffix}"


def _order(row: Mapping[str, Any]) -> tuple[int, int, str]:
    pattern, mechanism = row.get("pattern"), row.get("mechanism")
    p = PATTERN_CHOICES.index(pattern) if pattern in PATTERN_CHOICES else len(PATTERN_CHOICES)
    m = MECHANISMS.index(mechanism) if mechanism in MECHANISMS else len(MECHANISMS)
    return p, m, _label(row)


def backward_map(rows: Sequence[Mapping[str, Any]], setup_name: str | None = None) -> BackwardMap:
    """The map of one family's ``rows`` (dicts of record fields): one set-up and one depth,
    chosen as the module docstring says. ``setup_name`` names the set-up in the title (on a
    line of its own) where the caller chose the rows of one set-up and can say more than "one
    process". Raises ``ValueError`` when the rows hold several families (naming them) or no
    row has a measured ``block_flow``."""
    models = sorted({str(r.get("model")) for r in rows})
    if len(models) != 1:
        raise ValueError(f"a backward map shows one family; rows hold {models or 'none'}")
    measured = [r for r in rows if isinstance(r.get("block_flow"), (list, tuple))]
    if not measured:
        raise ValueError(f"no row of {models[0]} has a measured block_flow")
    single = [r for r in measured if _setup(r) == "one process"]
    setup = "one process" if single else Counter(_setup(r) for r in measured).most_common(1)[0][0]
    depths = Counter(int(r["depth"]) for r in measured if _setup(r) == setup)
    depth = max(depths, key=lambda d: (depths[d], d))
    chosen = [r for r in rows if _setup(r) == setup and int(r["depth"]) == depth]
    n_blocks = max(
        len(r["block_flow"]) for r in chosen if isinstance(r.get("block_flow"), (list, tuple))
    )
    by_label: dict[str, tuple[str, ...]] = {}
    for r in sorted(chosen, key=_order):
        label = _label(r)
        flow = r.get("block_flow")
        codes = tuple(flow) if isinstance(flow, (list, tuple)) else (NOT_MEASURED,) * n_blocks
        unknown = [c for c in codes if c not in CODES and c != NOT_MEASURED]
        if unknown:
            raise ValueError(f"block_flow code {unknown[0]!r} is not one of: {', '.join(CODES)}")
        if label not in by_label or NOT_MEASURED in by_label[label]:
            by_label[label] = codes  # the first measured row of a label wins
    if setup_name:
        setup = setup_name
        title = f"Backward map: {models[0]}, depth {depth}\n{setup}"
    else:
        title = f"Backward map: {models[0]}, depth {depth}, {setup}"
    return BackwardMap(models[0], depth, setup, title, tuple(by_label), tuple(by_label.values()))


def map_figure(m: BackwardMap) -> Figure:
    """The figure of map ``m``: an image of code indices (into :data:`CODES`, then ``n/a``),
    each cell's glyph as a text artist, the codes' legend outside the axes, below them."""
    keys = [*CODES, NOT_MEASURED]
    styles = [*CODES.values(), _NA_STYLE]
    n_rows = len(m.labels)
    n_cols = max((len(row) for row in m.cells), default=0)
    grid = np.full((n_rows, n_cols), keys.index(NOT_MEASURED), dtype=float)
    for i, row in enumerate(m.cells):
        for j, code in enumerate(row):
            grid[i, j] = keys.index(code)
    cmap = ListedColormap([colour for _, colour, _ in styles])
    norm = BoundaryNorm(np.arange(len(keys) + 1) - 0.5, len(keys))
    used = [k for k in keys if any(k in row for row in m.cells)]
    # Room for the row labels and the cells, and below them for the legend (two columns):
    # constrained layout keeps the legend outside the axes and below the title.
    label_in = 0.075 * max((len(s) for s in m.labels), default=0)
    title_in = 0.1 * max(len(line) for line in m.title.splitlines())  # the suptitle's width
    width = max(1.5 + label_in + 0.55 * n_cols, 6.0, title_in)
    height = 1.9 + 0.2 * m.title.count("\n") + 0.3 * n_rows + 0.25 * math.ceil(len(used) / 2)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i, row in enumerate(m.cells):
        for j, code in enumerate(row):
            glyph = styles[keys.index(code)][0]
            dark = code in ("wx", "starved", "moved")
            ax.text(
                j, i, glyph, ha="center", va="center", fontsize=8,
                color="white" if dark else "black", gid=f"cell:{i}:{j}:{code}",
            )  # fmt: skip
    for i, row in enumerate(m.cells):
        if NOT_MEASURED in row:
            ax.add_patch(
                Rectangle((-0.5, i - 0.5), n_cols, 1, fill=False, hatch="//", edgecolor="#636363")
            )
    ax.set_xticks(range(n_cols), [str(j) for j in range(n_cols)])
    ax.set_yticks(range(n_rows), list(m.labels))
    ax.set_xlabel("block (0 is fed the data: never an input gradient)")
    ax.set_ylabel("pattern / mechanism")
    fig.suptitle(m.title)  # above the axes and the legend alike: neither can cover it
    handles = [
        Patch(facecolor=styles[keys.index(k)][1], edgecolor="#636363",
              label=f"{styles[keys.index(k)][0]}  {styles[keys.index(k)][2]}")
        for k in used
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=2, title="what backward did")
    return fig


def draw_backward_map(
    rows: Sequence[Mapping[str, Any]], path: Path, setup_name: str | None = None
) -> BackwardMap:
    """Draw the backward map of one family's ``rows`` (dicts of record fields) to ``path``
    (PNG) and return what it shows. Raises ``ValueError`` as :func:`backward_map` does."""
    m = backward_map(rows, setup_name)
    fig = map_figure(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return m
