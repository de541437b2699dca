"""The comparison report (``compare.md``): the rendering of a
:class:`~bench_lib.analysis.compare.Comparison`, beside the statistics that make it.

:func:`build_comparison` returns a :class:`~bench_lib.analysis.format.Rendered` (markdown and
figures); :mod:`bench_lib.analysis.cli` writes it.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .compare import MIN_SAMPLES, Comparison
from .format import (
    Rendered,
    Row,
    code,
    dist,
    fmt_ratio,
    fmt_seconds,
    join,
    plural,
    records,
    tidy_text,
    verdict_label,
)
from .format import table as md_table
from .header import run_rows
from .results import Run, is_missing, mechanism_order

__all__ = ["build_comparison"]


def build_comparison(
    base: Run, new: Run, base_frame: pd.DataFrame, new_frame: pd.DataFrame, comp: Comparison
) -> Rendered:
    """The comparison report of ``new`` against ``base`` (summary first, then details)."""
    table = comp.table
    counts = comp.counts()
    lines = ["# freeze-bench comparison", ""]
    lines += [f"Base: `{base.path}`. New: `{new.path}`.", ""]
    summary = [
        f"{counts['faster']} faster",
        f"{counts['slower']} slower",
        f"{counts['unchanged']} unchanged",
        f"{counts['not tested']} not tested",
        f"{counts['newly invalid']} newly invalid",
    ]
    extra = [
        f"{counts[k]} {k}"
        for k in ("newly valid", "newly failed", "recovered", "verdict changed")
        if counts[k]
    ]
    lines += [
        "## Summary",
        "",
        f"Of {plural(len(table), 'case')} in both runs: {', '.join(summary + extra)}. "
        f"{len(comp.only_base)} only in the base run, {len(comp.only_new)} only in the new run.",
        "",
    ]
    if len(table) and table["median_ratio"].notna().any():
        ratios = [float(v) for v in table["median_ratio"] if not is_missing(v)]
        lines += [
            f"New/base ratio of median step times: {dist(ratios, fmt_ratio)} (below 1: new is "
            f"faster).",
            "",
        ]
    drift = comp.baseline_drift()
    if drift:
        moved = max(abs(d - 1.0) for d in drift)
        lines += [
            f"**Machine drift.** The baselines (nothing frozen) moved by {dist(drift, fmt_ratio)} "
            "between the runs."
            + (
                f" That is more than {comp.min_change:.0%}: changes of that size in the other "
                "cases may be the machine's drift rather than the code's. The time ratios to the "
                "baseline are measured inside each run, in interleaved pairs, and cancel it."
                if moved >= comp.min_change
                else ""
            ),
            "",
        ]
    if len(table):
        lines += [
            f"**Time ratio to the baseline** (drift-free): {counts['time ratio lower']} cases "
            f"lower and {counts['time ratio higher']} higher in the new run beyond both 95% "
            f"intervals, {counts['time ratio same']} with overlapping intervals, "
            f"{counts['time ratio no interval']} without an interval (baselines, failed cases).",
            "",
        ]
    by_mech = []
    for mech in mechanism_order(table["mechanism"]) if len(table) else []:
        sub = table[table["mechanism"] == mech]
        vals = [float(v) for v in sub["median_ratio"] if not is_missing(v)]
        c = Counter(sub["change"])
        by_mech.append(
            [
                code(mech),
                len(sub),
                fmt_ratio(np.median(vals)) if vals else "—",
                c["faster"],
                c["slower"],
                c["unchanged"],
                c["not tested"],
            ]
        )
    if by_mech:
        lines += [
            *md_table(
                [
                    "mechanism",
                    "cases",
                    "median new/base",
                    "faster",
                    "slower",
                    "unchanged",
                    "not tested",
                ],
                by_mech,
            ),
            "",
        ]
    lines += [
        "**Test.** A case is faster or slower when a two-sided Mann-Whitney U test on the timed "
        "rounds of both runs (pytest-benchmark's `stats.data`; normal approximation with tie "
        f"and continuity correction) rejects equal distributions at alpha = {comp.alpha:g} and "
        f"the ratio of medians differs from 1 by at least {comp.min_change:.0%} (timed rounds "
        "drift together on a shared machine, so the test alone calls a few percent of drift "
        "significant); the direction is that of the ratio of medians. Cases with fewer than "
        f"{MIN_SAMPLES} rounds "
        "on a side, "
        "or failed on a side, are not tested.",
        "",
    ]
    if comp.ignored_axes:
        how = (
            "automatically (one value in each run, different between them)"
            if comp.auto_ignored
            else "as asked (--ignore)"
        )
        values = "; ".join(
            f"`{a}`: {_show(b)} → {_show(n)}" for a, (b, n) in comp.ignored_values.items()
        )
        lines += [
            f"**Matching.** Cases are matched on their identity without "
            f"{join([code(a) for a in comp.ignored_axes])}, "
            f"left out {how}: {values}. Labels are the base run's case ids.",
            "",
        ]
    else:
        lines += ["**Matching.** Cases are matched on their full identity (`case_id`).", ""]
    lines += ["## The runs", ""]
    cols = [run_rows(base, records(base_frame)), run_rows(new, records(new_frame))]
    labels = [k for k, _ in cols[0]]
    lines += [
        *md_table(
            ["", "base", "new"], [[f"**{k}**", dict(cols[0])[k], dict(cols[1])[k]] for k in labels]
        ),
        "",
    ]
    lines += ["## Significant time changes", ""]
    significant = table[table["change"].isin(["faster", "slower"])] if len(table) else table
    if len(significant):
        significant = significant.sort_values("median_ratio", ascending=False)
        lines += md_table(
            ["case", "base median", "new median", "new/base", "p-value", "change"],
            [_timing_cells(r) for r in records(significant)],
        )
        lines.append("")
    else:
        lines += ["None.", ""]
    changed = table[table["verdict_change"] != ""] if len(table) else table
    lines += ["## Verdict changes", ""]
    if len(changed):
        lines += [
            *md_table(
                ["case", "change", "base verdict", "new verdict"],
                [
                    [
                        code(r["case_id"]),
                        r["verdict_change"],
                        _verdict_text(r, "base"),
                        _verdict_text(r, "new"),
                    ]
                    for r in records(changed)
                ],
            ),
            "",
        ]
    else:
        lines += ["None.", ""]
    figures: dict[str, Figure] = {}
    if len(table):
        figures["compare-medians.png"] = plots.compare_medians(
            table, _short(base.path), _short(new.path)
        )
        figures["compare-by-mechanism.png"] = plots.compare_by_mechanism(table)
        lines += [
            "## Figures",
            "",
            "![Median step time, new against base](compare-medians.png)",
            "",
            "![Ratio of medians new/base by mechanism](compare-by-mechanism.png)",
            "",
        ]
    lines += ["## Every case in both runs", ""]
    if len(table):
        lines += [
            *md_table(
                [
                    "case",
                    "base median",
                    "new median",
                    "new/base",
                    "p-value",
                    "change",
                    "time ratio to baseline (base → new)",
                    "verdict (base → new)",
                ],
                [
                    [
                        *_timing_cells(r),
                        f"{fmt_ratio(r['base_time_ratio'])} → {fmt_ratio(r['new_time_ratio'])}",
                        f"{_verdict_text(r, 'base')} → {_verdict_text(r, 'new')}",
                    ]
                    for r in records(table)
                ],
            ),
            "",
        ]
    else:
        lines += ["No case is in both runs.", ""]
    for title, frame in (
        ("Only in the base run", comp.only_base),
        ("Only in the new run", comp.only_new),
    ):
        lines += [f"## {title}", ""]
        if len(frame):
            lines += [f"- `{r['case_id']}` ({verdict_label(r)})" for r in records(frame)] + [""]
        else:
            lines += ["None.", ""]
    return Rendered(tidy_text(lines), figures)


def _timing_cells(r: Row) -> list[Any]:
    """Case, base median, new median, new/base, p-value, change: the first columns of both
    case tables."""
    return [
        code(r["case_id"]),
        fmt_seconds(r["base_median_s"]),
        fmt_seconds(r["new_median_s"]),
        fmt_ratio(r["median_ratio"]),
        _p(r["p_value"]),
        r["change"],
    ]


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


def _p(value: Any) -> str:
    if is_missing(value) or math.isnan(float(value)):
        return "—"
    v = float(value)
    return "< 0.0001" if v < 1e-4 else f"{v:.4f}"


def _verdict_text(row: Row, side: str) -> str:
    return verdict_label(
        {
            "validity": row[f"{side}_validity"],
            "verdict": row[f"{side}_verdict"],
            "status": row[f"{side}_status"],
        }
    )
