"""Figures of a run and of a comparison. Every function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, so no global state and
no GUI backend: rendering goes through Agg); saving them is the caller's job
(:func:`png_bytes`). Inputs are tidy tables from :func:`bench_lib.results.tidy` (or their
subsets) and :class:`bench_lib.compare.Comparison` tables; values are stored in bytes and
seconds and scaled to readable units here, on the axes only.

Invalid cases are drawn hollow (line plots, scatter) or hatched with a cross (heatmap), so that
a fast but wrong mechanism never looks like a winner.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib's is imported: no GUI, ever

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from ..vocab import MECHANISMS
from .results import (
    BYTE_UNITS,
    SECOND_UNITS,
    TIMES,
    is_missing,
    mechanism_order,
    pattern_label_order,
    scale,
)

__all__ = [
    "MEMORY_CATEGORIES",
    "compare_by_mechanism",
    "compare_medians",
    "memory_breakdown",
    "png_bytes",
    "ratio_heatmap",
    "ratio_vs_flops",
    "time_memory_vs_depth",
]

#: The categories of the memory breakdown: column -> legend label.
MEMORY_CATEGORIES: dict[str, str] = {
    "param_bytes": "parameters",
    "grad_bytes": "gradients",
    "optimizer_state_bytes": "optimizer state",
    "saved_activation_bytes": "activations saved for backward",
}
#: Colour of each time-change label in comparison figures.
CHANGE_COLORS: dict[str, str] = {
    "faster": "#1a9850",
    "slower": "#d73027",
    "unchanged": "#7f7f7f",
    "not tested": "#bdbdbd",
}
_PALETTE = [matplotlib.colormaps["tab10"](i) for i in range(10)]
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_DPI = 110
_RATIO_TICKS = (0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0)


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)  # constrained layout already fits everything in
    return buf.getvalue()


def mechanism_color(name: str) -> Any:
    """A stable colour per mechanism (the same in every figure of every report)."""
    known = list(MECHANISMS)
    i = known.index(name) if name in known else len(known) + sum(map(ord, name))
    return "black" if name == "none" else _PALETTE[(i - 1) % len(_PALETTE)]


def _unit_for(values: Sequence[float], units: Sequence[tuple[str, float]]) -> tuple[float, str]:
    finite = [abs(v) for v in values if not is_missing(v) and math.isfinite(v)]
    _, name = scale(max(finite) if finite else 1.0, units)
    return dict(units)[name], name


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]


def _invalid(row: pd.Series) -> bool:
    return bool(row["validity"] == "invalid")


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# ---------------------------------------------------------------------------- time, memory


def time_memory_vs_depth(frame: pd.DataFrame, title: str) -> Figure:
    """Median step time and peak memory against depth: a pair of panels (time above memory)
    per frozen pattern, at most four pairs a row, one line per mechanism; the baseline (nothing
    frozen) is the dashed black line in every panel. Hollow markers are invalid cases.
    ``frame``: one setup's rows."""
    ok = _ok(frame)
    labels = [p for p in pattern_label_order(_rows(ok)) if p != "none"] or ["none"]
    base = ok[ok["mechanism"] == "none"].sort_values("depth")
    t_size, t_unit = _unit_for(list(ok["median_s"]), SECOND_UNITS)
    m_size, m_unit = _unit_for(list(ok["peak_memory_bytes"].astype(float)), BYTE_UNITS)
    ncols = min(4, len(labels))
    groups = math.ceil(len(labels) / ncols)
    fig = Figure(figsize=(3.7 * ncols + 2.2, 5.6 * groups + 0.4), layout="constrained")
    axes = fig.subplots(2 * groups, ncols, squeeze=False)
    metrics = (
        ("median_s", t_size, f"median step time ({t_unit})"),
        ("peak_memory_bytes", m_size, f"peak memory ({m_unit})"),
    )
    mechanisms = [m for m in mechanism_order(ok["mechanism"]) if m != "none"]
    depths = sorted({int(d) for d in ok["depth"]})
    for k in range(groups * ncols):
        g, j = divmod(k, ncols)
        if k >= len(labels):
            axes[2 * g][j].set_visible(False)
            axes[2 * g + 1][j].set_visible(False)
            continue
        label = labels[k]
        sub = ok[ok["pattern_label"] == label]
        for i, (column, size, ylabel) in enumerate(metrics):
            ax = axes[2 * g + i][j]
            if len(base):
                ax.plot(
                    base["depth"],
                    base[column].astype(float) / size,
                    "--",
                    color="black",
                    marker="o",
                )
            for mech in mechanisms:
                m = sub[sub["mechanism"] == mech].sort_values("depth")
                if not len(m):
                    continue
                color = mechanism_color(mech)
                ys = m[column].astype(float) / size
                ax.plot(m["depth"], ys, "-", color=color)
                face = ["none" if _invalid(r) else color for _, r in m.iterrows()]
                ax.scatter(
                    m["depth"],
                    ys,
                    s=42,
                    facecolors=face,
                    edgecolors=[color] * len(m),
                    linewidths=1.5,
                    zorder=3,
                )
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.set_xticks(depths)
            if len(depths) == 1:
                ax.set_xlim(depths[0] - 1, depths[0] + 1)
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_title(f"pattern: {label}")
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("depth (blocks)")
    handles = [Line2D([], [], color="black", ls="--", marker="o", label="baseline")]
    handles += [Line2D([], [], color=mechanism_color(m), marker="o", label=m) for m in mechanisms]
    handles.append(
        Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="hollow = invalid")
    )
    fig.legend(handles=handles, loc="outside right upper", title="mechanism")
    fig.suptitle(title)
    return fig


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


# ---------------------------------------------------------------------------- heatmap


def ratio_heatmap(frame: pd.DataFrame, title: str) -> Figure:
    """Time ratio (case / baseline, interleaved pairs) for every pattern x mechanism, one panel
    per depth. Valid cells are coloured (green: faster than the baseline, red: slower); invalid
    cells are left uncoloured, hatched and marked ✗ with their ratio, so that they never look
    like winners; failed cases say so; grey cells were not measured. ``frame``: one setup's
    rows."""
    ok = frame[frame["mechanism"] != "none"]
    depths = sorted(set(ok["depth"])) or [None]
    patterns = pattern_label_order(_rows(ok))
    mechanisms = mechanism_order(ok["mechanism"])
    ratios = [float(v) for v in ok["time_ratio"] if not is_missing(v) and float(v) > 0]
    lo, hi = (min(ratios), max(ratios)) if ratios else (0.5, 1.5)
    # Symmetric around 1 in ratio terms (0.5 and 2 get the same strength of colour).
    span = max(1 / lo, hi, 1.05)
    norm = TwoSlopeNorm(vcenter=1.0, vmin=1 / span, vmax=span)
    cmap = matplotlib.colormaps["RdYlGn_r"]
    width = max(5.5, 1.2 * len(mechanisms) + 2.5)
    height = 0.5 * len(patterns) + 1.4
    fig = Figure(figsize=(width, max(3.4, height * len(depths) + 0.8)), layout="constrained")
    axes = fig.subplots(len(depths), 1, squeeze=False)[:, 0]
    image = None
    for k, (ax, depth) in enumerate(zip(axes, depths, strict=True)):
        sub = ok if depth is None else ok[ok["depth"] == depth]
        grid = np.full((len(patterns), len(mechanisms)), np.nan)
        invalid = np.zeros(grid.shape, dtype=bool)
        measured = np.zeros(grid.shape, dtype=bool)
        failed: dict[tuple[int, int], str] = {}
        for _, r in sub.iterrows():
            i, j = patterns.index(r["pattern_label"]), mechanisms.index(r["mechanism"])
            measured[i, j] = True
            if r["status"] != "ok":
                failed[i, j] = str(r["status"])
                continue
            if not is_missing(r["time_ratio"]):
                grid[i, j] = float(r["time_ratio"])
            invalid[i, j] = _invalid(r)
        ax.set_facecolor("0.82")
        shown = np.ma.masked_where(np.isnan(grid) | invalid, grid)
        image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto")
        for i in range(len(patterns)):
            for j in range(len(mechanisms)):
                value = grid[i, j]
                if invalid[i, j]:
                    ax.add_patch(
                        Rectangle(
                            (j - 0.5, i - 0.5),
                            1,
                            1,
                            facecolor="white",
                            hatch="xx",
                            edgecolor="0.55",
                            linewidth=0,
                        )
                    )
                if (i, j) in failed:
                    text = f"failed: {failed[i, j]}"
                elif not measured[i, j]:
                    text = "—"
                elif math.isnan(value):
                    text = "✗" if invalid[i, j] else "n/a"
                else:
                    text = f"{'✗ ' if invalid[i, j] else ''}{value:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="black",
                    bbox={"facecolor": "white", "alpha": 0.75, "pad": 1.5, "edgecolor": "none"},
                )
        last = k == len(depths) - 1
        ax.set_xticks(range(len(mechanisms)), mechanisms if last else [], rotation=30, ha="right")
        ax.set_yticks(range(len(patterns)), patterns)
        if last:
            ax.set_xlabel("mechanism")
        ax.set_ylabel("frozen pattern")
        ax.set_title(f"depth {depth}" if depth is not None else "no case", fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes), label="case / baseline (< 1: faster)")
        ticks = [t for t in _RATIO_TICKS if 1 / span <= t <= span]
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    fig.legend(
        handles=[
            Patch(
                facecolor="white", edgecolor="0.55", hatch="xx", label="✗ invalid (not a winner)"
            ),
            Patch(facecolor="0.82", label="— not measured"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- memory breakdown


def memory_breakdown(frame: pd.DataFrame, title: str) -> Figure:
    """Bytes by category (parameters, gradients, optimizer state, activations saved for
    backward), stacked, one horizontal bar per (pattern, mechanism), the baseline on top and
    patterns separated by gaps. ``frame``: one setup's rows at one depth. Invalid cases are
    labelled ✗ and drawn hatched."""
    ok = _ok(frame)
    bars: list[tuple[str, pd.Series]] = []
    positions: list[float] = []
    y = 0.0
    for pattern in pattern_label_order(_rows(ok)):
        sub = ok[ok["pattern_label"] == pattern]
        for mech in mechanism_order(sub["mechanism"]):
            row = sub[sub["mechanism"] == mech].iloc[0]
            name = "baseline (nothing frozen)" if mech == "none" else f"{pattern} · {mech}"
            bars.append((f"✗ {name}" if _invalid(row) else name, row))
            positions.append(y)
            y += 1.0
        y += 0.6  # a gap between patterns
    totals = [sum(_value(r, c) for c in MEMORY_CATEGORIES) for _, r in bars]
    size, unit = _unit_for(totals, BYTE_UNITS)
    fig = Figure(
        figsize=(9.5, 0.34 * len(bars) + 0.6 * len(set(ok["pattern_label"])) + 1.6),
        layout="constrained",
    )
    ax = fig.subplots()
    if not bars:
        _message(ax, "no case measured")
        fig.suptitle(title)
        return fig
    left = np.zeros(len(bars))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    hatches = ["xx" if label.startswith("✗") else "" for label, _ in bars]
    for color, (column, label) in zip(colors, MEMORY_CATEGORIES.items(), strict=True):
        values = np.array([_value(r, column) / size for _, r in bars])
        drawn = ax.barh(positions, values, left=left, color=color, label=label, height=0.8)
        for patch, hatch in zip(drawn, hatches, strict=True):
            patch.set_hatch(hatch)
            patch.set_edgecolor("white" if hatch else color)
        left += values
    ax.set_yticks(positions, [label for label, _ in bars])
    ax.invert_yaxis()
    ax.set_xlabel(f"bytes by category ({unit})")
    ax.set_ylabel("frozen pattern · mechanism")
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, title="category (✗ hatched: invalid case)")
    fig.suptitle(textwrap.fill(title, 80))  # setup titles are long; the figure is narrow
    return fig


def _value(row: pd.Series, column: str) -> float:
    value = row[column]
    return 0.0 if is_missing(value) else float(value)


def _first(frame: pd.DataFrame, column: str) -> float:
    if not len(frame) or is_missing(frame[column].iloc[0]):
        return 0.0
    return float(frame[column].iloc[0])


# ---------------------------------------------------------------------------- FLOPs


def ratio_vs_flops(frame: pd.DataFrame, title: str) -> Figure:
    """Measured time ratio (with its 95% interval) against FLOP ratio, both relative to the
    baseline, for every frozen case; the line y = x is where time follows FLOPs. Colour:
    mechanism; marker: model family; hollow: invalid."""
    ok = _ok(frame)
    ok = ok[(ok["mechanism"] != "none")]
    ok = ok[
        [
            not is_missing(a) and not is_missing(b)
            for a, b in zip(ok["flops_ratio"], ok["time_ratio"], strict=True)
        ]
    ]
    fig = Figure(figsize=(7.8, 6.0), layout="constrained")
    ax = fig.subplots()
    if not len(ok):
        _message(ax, "FLOPs or time ratios not measured in this run")
        fig.suptitle(title)
        return fig
    models = sorted(set(ok["model"]))
    mechanisms = mechanism_order(ok["mechanism"])
    for _, r in ok.iterrows():
        color = mechanism_color(r["mechanism"])
        x, y = float(r["flops_ratio"]), float(r["time_ratio"])
        if not is_missing(r["time_ratio_ci_low"]) and not is_missing(r["time_ratio_ci_high"]):
            ax.plot(
                [x, x],
                [float(r["time_ratio_ci_low"]), float(r["time_ratio_ci_high"])],
                color=color,
                alpha=0.5,
                lw=1,
            )
        ax.scatter(
            [x],
            [y],
            s=48,
            marker=_MARKERS[models.index(r["model"]) % len(_MARKERS)],
            facecolors="none" if _invalid(r) else [color],
            edgecolors=[color],
            linewidths=1.5,
            zorder=3,
        )
    values = [float(v) for v in ok["flops_ratio"]] + [float(v) for v in ok["time_ratio"]]
    top = max(1.1, max(values) * 1.05)
    ax.plot([0, top], [0, top], color="0.3", ls="--", lw=1, label="y = x")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    # No fixed aspect: constrained layout sized the margins before set_aspect shrank the axes,
    # and the first render drew the y tick labels over the y label. Equal limits keep y = x the
    # diagonal; the figure's proportions keep the axes near square.
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("FLOP ratio (case step FLOPs / baseline step FLOPs)")
    ax.set_ylabel("time ratio (case step time / baseline step time)")
    handles = [Line2D([], [], color="0.3", ls="--", label="y = x (time follows FLOPs)")]
    handles += [
        Line2D([], [], color=mechanism_color(m), marker="o", ls="", label=m) for m in mechanisms
    ]
    handles += [
        Line2D([], [], color="0.3", marker=_MARKERS[i % len(_MARKERS)], ls="", label=f"model: {m}")
        for i, m in enumerate(models)
    ]
    handles.append(
        Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="hollow = invalid")
    )
    handles.append(Line2D([], [], color="0.3", lw=1, alpha=0.5, label="95% interval"))
    fig.legend(handles=handles, loc="outside right upper")
    ax.set_title(textwrap.fill(title, 50))
    return fig


# ---------------------------------------------------------------------------- comparison


def compare_medians(table: pd.DataFrame, base_label: str, new_label: str) -> Figure:
    """Median step time in the new run against the base run, log-log, one point per aligned
    case, coloured by significant change; the dashed line is "no change"."""
    fig = Figure(figsize=(7.4, 6.2), layout="constrained")
    ax = fig.subplots()
    rows = table[
        [
            not is_missing(a) and not is_missing(b)
            for a, b in zip(table["base_median_s"], table["new_median_s"], strict=True)
        ]
    ]
    if not len(rows):
        _message(ax, "no case measured in both runs")
        return fig
    values = list(rows["base_median_s"].astype(float)) + list(rows["new_median_s"].astype(float))
    size, unit = _unit_for(values, SECOND_UNITS)
    for change, color in CHANGE_COLORS.items():
        sub = rows[rows["change"] == change]
        if len(sub):
            ax.scatter(
                sub["base_median_s"].astype(float) / size,
                sub["new_median_s"].astype(float) / size,
                s=36,
                color=color,
                label=f"{change} ({len(sub)})",
                zorder=3,
            )
    lo, hi = min(values) / size / 1.5, max(values) / size * 1.5
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.3", lw=1, label="no change")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(_log_label))
        axis.set_minor_formatter(FuncFormatter(_log_label))
    ax.grid(True, which="both", alpha=0.25)
    ax.set_xlabel(f"base: {base_label}, median step time ({unit})")
    ax.set_ylabel(f"new: {new_label}, median step time ({unit})")
    ax.legend(loc="upper left")
    fig.suptitle("Median step time, new against base (below the line: new is faster)")
    return fig


def _log_label(value: float, _pos: Any = None) -> str:
    """Tick labels on a log axis: only 1, 2 and 5 times a power of ten, so they never crowd."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else ""


def compare_by_mechanism(table: pd.DataFrame) -> Figure:
    """Ratio of medians new / base for every aligned case, grouped by mechanism, log scale,
    coloured by significant change."""
    fig = Figure(
        figsize=(max(6.5, 1.1 * table["mechanism"].nunique() + 3), 5.0), layout="constrained"
    )
    ax = fig.subplots()
    rows = table[[not is_missing(v) for v in table["median_ratio"]]] if len(table) else table
    if not len(rows):
        _message(ax, "no case measured in both runs")
        return fig
    mechanisms = mechanism_order(rows["mechanism"])
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for change, color in CHANGE_COLORS.items():
        sub = rows[rows["change"] == change]
        if not len(sub):
            continue
        xs = [mechanisms.index(m) + rng.uniform(-0.18, 0.18) for m in sub["mechanism"]]
        ax.scatter(
            xs,
            sub["median_ratio"].astype(float),
            s=34,
            color=color,
            label=f"{change} ({len(sub)})",
            zorder=3,
        )
    ax.axhline(1.0, ls="--", color="0.3", lw=1)
    values = [float(v) for v in rows["median_ratio"]] + [1.0]
    # A log scale only when the ratios span a wide range (CPU vs GPU); linear reads easier.
    if max(values) / min(values) > 4:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}{TIMES}"))
        ax.yaxis.set_tick_params(which="minor", labelsize=7)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{TIMES}"))
    ax.set_xticks(
        range(len(mechanisms)),
        ["baseline" if m == "none" else m for m in mechanisms],
        rotation=30,
        ha="right",
    )
    ax.set_xlabel("mechanism")
    ax.set_ylabel("new / base median step time")
    ax.grid(True, axis="y", which="both", alpha=0.25)
    ax.legend(loc="best")
    fig.suptitle("Ratio of medians new / base, by mechanism (below 1: new is faster)")
    return fig
