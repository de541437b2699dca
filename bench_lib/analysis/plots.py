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
    is_baseline_row,
    is_missing,
    mechanism_order,
    pattern_label_order,
    scale,
)

__all__ = [
    "MEMORY_CATEGORIES",
    "compare_by_mechanism",
    "compare_medians",
    "log_norm_centred",
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
#: Colour of each change label of :data:`bench_lib.analysis.compare.CHANGES` in comparison
#: figures.
CHANGE_COLORS: dict[str, str] = {
    "lower": "#1a9850",
    "higher": "#d73027",
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
    """Time ratio to the baseline (with its 95% interval) and peak memory, per frozen pattern
    and mechanism. ``frame``: one setup's rows.

    Times are the paired ratios (``time_ratio``, ``time_ratio_ci_low/high``), never medians
    timed at different moments, so nothing drawn contradicts a ratio; the baseline is the
    dashed line at 1. With two depths or more, each pattern gets a pair of panels (time ratio
    above peak memory) against depth, one line per mechanism. With one depth, one pair of panels
    holds every pattern x mechanism as points (time) and bars (memory), and the time panel's
    right axis reads the ratio in milliseconds: the baseline's median times the ratio.
    Invalid cases are hollow with a x; cases that failed or that a set-up refused are a x on
    the baseline line (time) and at 0 (memory), in their mechanism's colour.

    Each time point is a ``Line2D`` whose gid is ``time|<pattern label>|<mechanism>|<depth>``
    (``time|baseline|none|<depth>`` for the baseline), so tests can read what was drawn.
    """
    rows = frame[frame["mechanism"].notna()]
    depths = sorted({int(d) for d in rows["depth"] if not is_missing(d)})
    if len(depths) >= 2:
        return _vs_depth(rows, title, depths)
    return _one_depth(rows, title, depths[0] if depths else None)


def _legend_handles(mechanisms: Sequence[str]) -> list[Any]:
    handles: list[Any] = [
        Line2D([], [], color="black", ls="--", label="baseline (ratio 1)"),
    ]
    handles += [
        Line2D([], [], color=mechanism_color(m), marker="o", ls="", label=m) for m in mechanisms
    ]
    handles += [
        Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="hollow = invalid"),
        Line2D([], [], color="0.3", marker="x", ls="", ms=8, label="x = failed or refused"),
        Line2D([], [], color="0.3", lw=1, label="95% interval"),
    ]
    return handles


def _point(
    ax: Axes, x: float, r: pd.Series, color: Any, gid: str, *, time: bool, size: float
) -> None:
    """One case: its time ratio with interval (``time``) or its peak memory in ``size`` units;
    a x at 1 (time) or 0 (memory) when it failed."""
    failed = r["status"] != "ok"
    value = r["time_ratio"] if time else r["peak_memory_bytes"]
    if failed or is_missing(value):
        (line,) = ax.plot([x], [1.0 if time else 0.0], "x", color=color, ms=9, mew=2, zorder=4)
        line.set_gid(gid + "|failed" if time else None)
        return
    y = float(value) / (1.0 if time else size)
    if time and not is_missing(r["time_ratio_ci_low"]) and not is_missing(r["time_ratio_ci_high"]):
        ax.plot(
            [x, x],
            [float(r["time_ratio_ci_low"]), float(r["time_ratio_ci_high"])],
            color=color,
            lw=1.2,
            alpha=0.7,
            zorder=2,
        )
    invalid = _invalid(r)
    (line,) = ax.plot(
        [x], [y], "o", ms=7, mfc="none" if invalid else color, mec=color, mew=1.5, zorder=3
    )
    if time:
        line.set_gid(gid)
    if invalid:
        ax.plot([x], [y], "x", color=color, ms=5, mew=1.2, zorder=4)


def _vs_depth(rows: pd.DataFrame, title: str, depths: list[int]) -> Figure:
    labels = [p for p in pattern_label_order(_rows(rows)) if p != "none"] or ["none"]
    base = rows[[is_baseline_row(r) for r in _rows(rows)]]
    m_size, m_unit = _unit_for(list(rows["peak_memory_bytes"].astype(float)), BYTE_UNITS)
    ncols = min(4, len(labels))
    groups = math.ceil(len(labels) / ncols)
    fig = Figure(figsize=(3.7 * ncols + 2.4, 5.6 * groups + 0.6), layout="constrained")
    axes = fig.subplots(2 * groups, ncols, squeeze=False)
    mechanisms = [m for m in mechanism_order(rows["mechanism"]) if m != "none"]
    for k in range(groups * ncols):
        g, j = divmod(k, ncols)
        if k >= len(labels):
            axes[2 * g][j].set_visible(False)
            axes[2 * g + 1][j].set_visible(False)
            continue
        label = labels[k]
        sub = rows[rows["pattern_label"] == label]
        for i, time in enumerate((True, False)):
            ax = axes[2 * g + i][j]
            if time:
                ax.axhline(1.0, ls="--", color="black", lw=1, zorder=1)
            else:
                ok_base = base[base["status"] == "ok"].sort_values("depth")
                ax.plot(
                    ok_base["depth"],
                    ok_base["peak_memory_bytes"].astype(float) / m_size,
                    "--",
                    color="black",
                    marker="o",
                )
            for n, mech in enumerate(mechanisms):
                m = sub[sub["mechanism"] == mech].sort_values("depth")
                color = mechanism_color(mech)
                # A small offset per mechanism so that intervals at one depth do not overlap.
                shift = 0.06 * (n - (len(mechanisms) - 1) / 2) * max(1, depths[-1] - depths[0])
                ok = m[(m["status"] == "ok")]
                values = ok["time_ratio"] if time else ok["peak_memory_bytes"]
                keep = [not is_missing(v) for v in values]
                ax.plot(
                    ok["depth"][keep] + shift,
                    values[keep].astype(float) / (1.0 if time else m_size),
                    "-",
                    color=color,
                    lw=1,
                    alpha=0.6,
                )
                for _, r in m.iterrows():
                    gid = f"time|{label}|{mech}|{int(r['depth'])}"
                    _point(ax, int(r["depth"]) + shift, r, color, gid, time=time, size=m_size)
            ax.grid(True, alpha=0.3)
            ax.set_xticks(depths)
            if not time:
                ax.set_ylim(bottom=0)
            if j == 0:
                ax.set_ylabel("time ratio to the baseline" if time else f"peak memory ({m_unit})")
            if time:
                ax.set_title(f"pattern: {label}")
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("depth (blocks)")
    # Below the panels: a legend at the right edge can reach up into a long wrapped title.
    fig.legend(
        handles=_legend_handles(mechanisms), loc="outside lower center", ncols=4, title="mechanism"
    )
    fig.suptitle(textwrap.fill(title, 110))
    return fig


def _one_depth(rows: pd.DataFrame, title: str, depth: int | None) -> Figure:
    labels = [p for p in pattern_label_order(_rows(rows)) if p != "none"] or ["none"]
    mechanisms = [m for m in mechanism_order(rows["mechanism"]) if m != "none"]
    base = rows[[is_baseline_row(r) and r["status"] == "ok" for r in _rows(rows)]]
    m_size, m_unit = _unit_for(list(rows["peak_memory_bytes"].astype(float)), BYTE_UNITS)
    width = max(6.0, 0.45 * len(labels) * max(1, len(mechanisms)) + 3.5)
    fig = Figure(figsize=(width, 7.2), layout="constrained")
    t_ax, m_ax = fig.subplots(2, 1, sharex=True)
    t_ax.axhline(1.0, ls="--", color="black", lw=1, zorder=1)
    step = 0.8 / max(1, len(mechanisms))
    base_mem = None
    if len(base) and not is_missing(base["peak_memory_bytes"].iloc[0]):
        base_mem = float(base["peak_memory_bytes"].iloc[0]) / m_size
        m_ax.axhline(base_mem, ls="--", color="black", lw=1, zorder=1)
    for p, label in enumerate(labels):
        sub = rows[rows["pattern_label"] == label]
        for n, mech in enumerate(mechanisms):
            x = p - 0.4 + step * (n + 0.5)
            color = mechanism_color(mech)
            for _, r in sub[sub["mechanism"] == mech].iterrows():
                gid = f"time|{label}|{mech}|{depth}"
                _point(t_ax, x, r, color, gid, time=True, size=1.0)
                if r["status"] != "ok" or is_missing(r["peak_memory_bytes"]):
                    m_ax.plot([x], [0.0], "x", color=color, ms=9, mew=2, zorder=4)
                    continue
                m_ax.bar(
                    [x],
                    [float(r["peak_memory_bytes"]) / m_size],
                    width=step * 0.9,
                    color="white" if _invalid(r) else color,
                    edgecolor=color,
                    hatch="xx" if _invalid(r) else "",
                    zorder=2,
                )
    if len(base) and not is_missing(base["median_s"].iloc[0]):
        # Absolute milliseconds from the same rounds: the baseline's median times the ratio.
        b_s = float(base["median_s"].iloc[0])
        size, unit = _unit_for([b_s], SECOND_UNITS)
        per = b_s / size
        right = t_ax.secondary_yaxis(
            "right", functions=(lambda r: np.asarray(r) * per, lambda v: np.asarray(v) / per)
        )
        right.set_ylabel(f"ratio x baseline median ({unit})")
    t_ax.set_ylabel("time ratio to the baseline")
    t_ax.grid(True, axis="y", alpha=0.3)
    m_ax.set_ylabel(f"peak memory ({m_unit})")
    m_ax.set_ylim(bottom=0)
    m_ax.grid(True, axis="y", alpha=0.3)
    m_ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    m_ax.set_xlabel("frozen pattern" + (f" (depth {depth})" if depth is not None else ""))
    handles = _legend_handles(mechanisms)
    handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="xx", label="hatched = invalid"))
    fig.legend(handles=handles, loc="outside lower center", ncols=4, title="mechanism")
    fig.suptitle(textwrap.fill(title, 110))
    return fig


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


# ---------------------------------------------------------------------------- heatmap


def log_norm_centred(ratios: Sequence[float]) -> TwoSlopeNorm:
    """A norm on log ratios centred on log 1 = 0, each side reaching its own extreme: the
    fastest ratio gets the full green and the slowest the full red, whatever their asymmetry.
    A side with no value gets a token span (log 1.05) so the norm stays defined."""
    logs = [math.log(v) for v in ratios if not is_missing(v) and v > 0 and math.isfinite(v)]
    low = min([*logs, -math.log(1.05)])
    high = max([*logs, math.log(1.05)])
    return TwoSlopeNorm(vcenter=0.0, vmin=min(low, -1e-6), vmax=max(high, 1e-6))


def ratio_heatmap(frame: pd.DataFrame, title: str) -> Figure:
    """Time ratio (case / baseline, interleaved pairs) for every pattern x mechanism, one panel
    per depth. Colours are on the log of the ratio, centred on 1 (:func:`log_norm_centred`):
    green faster than the baseline, red slower. Invalid cells are left uncoloured, hatched and
    marked ✗ with their ratio, so that they never look like winners; failed or refused cases
    are hatched the other way and say so; grey cells were not measured. ``frame``: one setup's
    rows."""
    ok = frame[frame["mechanism"] != "none"]
    depths = sorted(set(ok["depth"])) or [None]
    patterns = pattern_label_order(_rows(ok))
    mechanisms = mechanism_order(ok["mechanism"])
    valid = ok[(ok["status"] == "ok") & (ok["validity"] != "invalid")]
    norm = log_norm_centred([float(v) for v in valid["time_ratio"] if not is_missing(v)])
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
        logs = np.log(np.where(grid > 0, grid, np.nan))
        shown = np.ma.masked_where(np.isnan(logs) | invalid, logs)
        image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto")
        for i in range(len(patterns)):
            for j in range(len(mechanisms)):
                value = grid[i, j]
                if invalid[i, j] or (i, j) in failed:
                    ax.add_patch(
                        Rectangle(
                            (j - 0.5, i - 0.5),
                            1,
                            1,
                            facecolor="white",
                            hatch="xx" if invalid[i, j] else "//",
                            edgecolor="0.55",
                            linewidth=0,
                        )
                    )
                if (i, j) in failed:
                    text = f"× {failed[i, j]}"
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
        bar = fig.colorbar(image, ax=list(axes), label="case / baseline (< 1: faster; log scale)")
        lo, hi = math.exp(float(norm.vmin or 0.0)), math.exp(float(norm.vmax or 0.0))
        ticks = sorted({*(t for t in _RATIO_TICKS if lo <= t <= hi), lo, hi})
        bar.set_ticks([math.log(t) for t in ticks], labels=[f"{t:.2g}" for t in ticks])
    fig.legend(
        handles=[
            Patch(
                facecolor="white", edgecolor="0.55", hatch="xx", label="✗ invalid (not a winner)"
            ),
            Patch(facecolor="white", edgecolor="0.55", hatch="//", label="× failed or refused"),
            Patch(facecolor="0.82", label="— not measured"),
        ],
        loc="outside lower center",
        ncols=3,
    )
    fig.suptitle(textwrap.fill(title, 90))
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
    """Each aligned case's time ratio to its own baseline (the drift-free number the comparison
    tests) in the new run against the base run, with both 95% intervals, log-log, coloured by
    the change label of :mod:`bench_lib.analysis.compare`; the dashed line is "no change".
    (The name is kept from when it drew absolute medians; those are drift-prone.)"""
    fig = Figure(figsize=(8.6, 6.2), layout="constrained")
    ax = fig.subplots()
    fig.suptitle("Time ratio to the baseline, new against base (below the line: relatively faster)")
    rows = table[
        [
            not is_missing(a) and not is_missing(b) and float(a) > 0 and float(b) > 0
            for a, b in zip(table["base_time_ratio"], table["new_time_ratio"], strict=True)
        ]
    ]
    rows = rows[rows["change"] != "not tested"] if len(rows) else rows
    if not len(rows):
        _message(ax, "no case with a time ratio in both runs")
        return fig
    for change, color in CHANGE_COLORS.items():
        sub = rows[rows["change"] == change]
        if not len(sub):
            continue
        x, y = sub["base_time_ratio"].astype(float), sub["new_time_ratio"].astype(float)
        ax.errorbar(
            x,
            y,
            xerr=_spread(sub, "base_time_ratio"),
            yerr=_spread(sub, "new_time_ratio"),
            fmt="o",
            ms=5,
            color=color,
            ecolor=color,
            elinewidth=0.8,
            alpha=0.8,
            label=f"{change} ({len(sub)})",
            zorder=3,
        )
    values = list(rows["base_time_ratio"].astype(float)) + list(
        rows["new_time_ratio"].astype(float)
    )
    lo, hi = min(values) / 1.3, max(values) * 1.3
    ax.plot([lo, hi], [lo, hi], ls="--", color="0.3", lw=1, label="no change")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(FuncFormatter(_log_label))
        axis.set_minor_formatter(FuncFormatter(_log_label))
    ax.grid(True, which="both", alpha=0.25)
    ax.set_xlabel(f"base: {base_label}, time ratio to the baseline")
    ax.set_ylabel(f"new: {new_label}, time ratio to the baseline")
    fig.legend(loc="outside right upper", title="change")
    return fig


def _spread(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Asymmetric error bars (below, above) from ``column``'s ``_ci_low``/``_ci_high``; 0 where
    a side has no interval."""
    mid = frame[column].astype(float).to_numpy()
    low = np.array([np.nan if is_missing(v) else float(v) for v in frame[f"{column}_ci_low"]])
    high = np.array([np.nan if is_missing(v) else float(v) for v in frame[f"{column}_ci_high"]])
    bars: np.ndarray = np.nan_to_num(np.clip(np.vstack([mid - low, high - mid]), 0, None))
    return bars


def _log_label(value: float, _pos: Any = None) -> str:
    """Tick labels on a log axis: only 1, 2 and 5 times a power of ten, so they never crowd."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else ""


def compare_by_mechanism(table: pd.DataFrame) -> Figure:
    """The change of every tested case's time ratio (new/base, with its 95% interval), grouped
    by mechanism and coloured by change label; beside them, as grey x, the baselines' absolute
    new/base medians (the machine's drift, which the ratios cancel)."""
    fig = Figure(
        figsize=(max(7.5, 1.1 * table["mechanism"].nunique() + 4.5), 5.0), layout="constrained"
    )
    ax = fig.subplots()
    fig.suptitle("Change of the time ratio to the baseline, new / base, by mechanism")
    rows = table[[not is_missing(v) for v in table["ratio_change"]]] if len(table) else table
    drift = table[[is_baseline_row(r) for r in _rows(table)]] if len(table) else table
    drift = drift[[not is_missing(v) for v in drift["median_ratio"]]] if len(drift) else drift
    if not len(rows) and not len(drift):
        _message(ax, "no case tested in both runs")
        return fig
    mechanisms = mechanism_order(list(rows["mechanism"]) + (["none"] if len(drift) else []))
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every time
    for change, color in CHANGE_COLORS.items():
        sub = rows[rows["change"] == change]
        if not len(sub):
            continue
        xs = np.array([mechanisms.index(m) + rng.uniform(-0.2, 0.2) for m in sub["mechanism"]])
        ys = sub["ratio_change"].astype(float).to_numpy()
        lo = sub["ratio_change_ci_low"].astype(float).to_numpy()
        hi = sub["ratio_change_ci_high"].astype(float).to_numpy()
        ax.errorbar(
            xs,
            ys,
            yerr=np.clip(np.vstack([ys - lo, hi - ys]), 0, None),
            fmt="o",
            ms=5,
            color=color,
            elinewidth=0.7,
            alpha=0.85,
            label=f"{change} ({len(sub)})",
            zorder=3,
        )
    if len(drift):
        ax.scatter(
            [mechanisms.index("none") + rng.uniform(-0.2, 0.2) for _ in range(len(drift))],
            drift["median_ratio"].astype(float),
            marker="x",
            color="0.45",
            s=36,
            label=f"baselines' absolute drift ({len(drift)})",
            zorder=3,
        )
    ax.axhline(1.0, ls="--", color="0.3", lw=1)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}{TIMES}"))
    ax.set_xticks(
        range(len(mechanisms)),
        ["baseline (drift)" if m == "none" else m for m in mechanisms],
        rotation=30,
        ha="right",
    )
    ax.set_xlabel("mechanism")
    ax.set_ylabel("new / base")
    ax.grid(True, axis="y", which="both", alpha=0.25)
    fig.legend(loc="outside right upper", title="change")
    return fig
