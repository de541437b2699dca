"""The comparison report (``compare.md``): the rendering of a
:class:`~bench_lib.analysis.compare.Comparison`, beside the statistics that make it.

The report opens with what the comparison could and could not resolve, computed from its own
data (:meth:`~bench_lib.analysis.compare.Comparison.resolution`); then the changes of the
drift-free time ratios (the only ones it flags); absolute times follow as description, beside
the baselines' drift. :func:`build_comparison` returns a
:class:`~bench_lib.analysis.format.Rendered` (markdown and figures);
:mod:`bench_lib.analysis.cli` writes it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import glance, plots, ranking
from .compare import CONFIDENCE, MIN_PAIRS, Comparison, Resolution
from .findings import facts
from .format import (
    Rendered,
    Row,
    code,
    dist,
    fmt_interval,
    fmt_pct,
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

__all__ = ["build_comparison", "resolution_lines"]

#: Changes whose resolution the first lines report, as fractions.
_SIZES = (0.05, 0.10, 0.20)


def resolution_lines(comp: Comparison) -> list[str]:
    """The first lines of ``compare.md``: what the comparison could and could not resolve,
    each number computed from the comparison's own data (and how, in the same sentence)."""
    res: Resolution = comp.resolution()
    lines = ["## What this comparison can resolve", ""]
    if res.tested:
        shares = ", ".join(f"{res.share_resolving(s)} a change of {s:.0%}" for s in _SIZES)
        lines.append(
            f"- **Time ratios to the baseline** (drift-free; the only numbers tested): for the "
            f"median case, changes under {fmt_pct(res.median_detectable)} are within this pair "
            f"of runs' noise. That is the median over the {res.tested} tested cases of the "
            "smallest change Welch's test on the per-round ratios would flag at Holm's strictest "
            f"level (alpha / {res.tested}), given each case's spread in both runs. Of the "
            f"{res.tested} cases, {shares} could be resolved."
        )
    else:
        lines.append(
            "- **Time ratios to the baseline**: no case could be tested (each needs at least "
            f"{MIN_PAIRS} per-round ratios in both runs and must not be a baseline)."
        )
    drift = comp.baseline_drift()
    if drift:
        lines.append(
            f"- **Absolute step times** (described, never tested): the baselines (nothing "
            f"frozen) moved by {dist(drift, fmt_ratio)} between the runs, so absolute changes "
            f"under {fmt_pct(res.drift)} are within this machine's drift (the largest "
            "|new/base - 1| of the baselines' medians)."
        )
    else:
        lines.append(
            "- **Absolute step times**: no baseline was measured in both runs, so the "
            "machine's drift between them is unknown."
        )
    lines += [
        "- **Not resolvable**: a change that moves a case and its baseline alike (a slower "
        "library, another machine) leaves every time ratio as it was; it shows only in the "
        "absolute times, and only beyond the drift above.",
        "",
    ]
    return lines


def build_comparison(
    base: Run, new: Run, base_frame: pd.DataFrame, new_frame: pd.DataFrame, comp: Comparison
) -> Rendered:
    """The comparison report of ``new`` against ``base`` (resolution and summary first, then
    details)."""
    table = comp.table
    counts = comp.counts()
    lines = ["# freeze-bench comparison", ""]
    lines += [f"Base: `{base.path}`. New: `{new.path}`.", ""]
    lines += resolution_lines(comp)
    summary = [f"{counts[k]} {k}" for k in ("lower", "higher", "unchanged", "not tested")]
    extra = [
        f"{counts[k]} {k}"
        for k in ("newly valid", "newly failed", "recovered", "verdict changed")
        if counts[k]
    ]
    lines += [
        "## Summary",
        "",
        f"Of {plural(len(table), 'case')} in both runs, time ratio to the baseline: "
        f"{', '.join(summary)}; {counts['newly invalid']} newly invalid"
        + (f", {', '.join(extra)}" if extra else "")
        + f". {len(comp.only_base)} only in the base run, {len(comp.only_new)} only in the new "
        "run.",
        "",
    ]
    by_mech = _by_mechanism(table)
    if by_mech:
        lines += [
            *md_table(
                [
                    "mechanism",
                    "cases",
                    "time ratio new/base (median)",
                    "lower",
                    "higher",
                    "unchanged",
                    "not tested",
                    "absolute new/base (median, descriptive)",
                ],
                by_mech,
            ),
            "",
        ]
    lines += [
        "**Test.** Each case's time ratio to its own baseline is measured inside each run in "
        "the rounds of its decision group (`ratio_samples`, one ratio per round), so the "
        "machine's drift cancels. For every case that is not a baseline and has at least "
        f"{MIN_PAIRS} rounds in both runs, Welch's t-test compares the logarithms of the per-round "
        "ratios of the two runs; the change is the ratio of their geometric means, new/base, "
        f"with its {CONFIDENCE:.0%} interval. The p-values are adjusted across the tested cases "
        f"with Holm's step-down method, which keeps the chance of flagging any case when "
        f"nothing changed at alpha = {comp.alpha:g}. A case is lower or higher when its "
        f"adjusted p-value is below alpha and its ratio moved by at least "
        f"{comp.min_change:.0%} (`--min-change`).",
        "",
    ]
    if len(table) and table["median_ratio"].notna().any():
        ratios = [float(v) for v in table["median_ratio"] if not is_missing(v)]
        lines += [
            "**Absolute times** (descriptive). New/base ratio of median step times: "
            f"{dist(ratios, fmt_ratio)}; read it against the baselines' drift above.",
            "",
        ]
    lines += _matching(comp)
    lines += decision_lines(base_frame, new_frame, [base], [new])
    lines += ["## The runs", ""]
    cols = [run_rows(base, records(base_frame)), run_rows(new, records(new_frame))]
    labels = [k for k, _ in cols[0]]
    lines += [
        *md_table(
            ["", "base", "new"], [[f"**{k}**", dict(cols[0])[k], dict(cols[1])[k]] for k in labels]
        ),
        "",
    ]
    lines += ["## Changed time ratios", ""]
    flagged = table[table["change"].isin(["lower", "higher"])] if len(table) else table
    if len(flagged):
        flagged = flagged.sort_values("ratio_change", ascending=False)
        lines += md_table(
            ["case", "time ratio (base → new)", "change [95% interval]", "p (Holm)", "change"],
            [
                [
                    code(r["case_id"]),
                    _ratios(r),
                    _change_text(r),
                    _p(r["p_holm"]),
                    r["change"],
                ]
                for r in records(flagged)
            ],
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
            "![Time ratio to the baseline, new against base](compare-medians.png)",
            "",
            "![Change of the time ratio new/base by mechanism](compare-by-mechanism.png)",
            "",
        ]
    lines += ["## Every case in both runs", ""]
    if len(table):
        lines += [
            *md_table(
                [
                    "case",
                    "time ratio (base → new)",
                    "change [95% interval]",
                    "p (Holm)",
                    "detectable",
                    "change",
                    "base median",
                    "new median",
                    "absolute new/base",
                    "verdict (base → new)",
                ],
                [
                    [
                        code(r["case_id"]),
                        _ratios(r),
                        _change_text(r),
                        _p(r["p_holm"]),
                        fmt_pct(r["detectable"]),
                        r["change"],
                        fmt_seconds(r["base_median_s"]),
                        fmt_seconds(r["new_median_s"]),
                        fmt_ratio(r["median_ratio"]),
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


def decision_lines(
    base_frame: pd.DataFrame,
    new_frame: pd.DataFrame,
    base_runs: Sequence[Run],
    new_runs: Sequence[Run],
) -> list[str]:
    """The "Decisions" section: does each family × pattern cell of the report name the same
    cheapest valid set in both runs? A cell that differs says whether a pair that decided it
    touches the margin in either run (then the runs could not have been sure of it)."""
    a = glance.family_pattern_cells(facts(base_frame, base_runs))
    b = glance.family_pattern_cells(facts(new_frame, new_runs))
    same, differ = 0, []
    for key, cells in a.items():
        for pattern, cell in cells.items():
            other = b.get(key, {}).get(pattern)
            da, db = cell.answer, other.answer if other is not None else None
            if da is None or db is None:
                continue
            if set(da.members) == set(db.members):
                same += 1
                continue
            moved = set(da.members) ^ set(db.members)
            touching = _touches(cell, da, moved) or (
                other is not None and _touches(other, db, moved)
            )
            differ.append([key[0] + key[1], pattern, da.names(), db.names(),
                           "yes" if touching else "**no**"])  # fmt: skip
    decided = same + len(differ)
    if not decided:
        return []
    lines = [
        "## Decisions",
        "",
        f"The report's cheapest valid set by family and pattern: {decided} cells decided in "
        f"both runs, {same} name the same set, {len(differ)} differ. A cell differs by noise "
        "when a pair that decided it touches the margin (its interval crosses 1 ± margin, or "
        "holds 1 wider than the margin) in either run.",
        "",
    ]
    if differ:
        lines += md_table(["family", "pattern", "base", "new", "a pair touches the margin"], differ)
        lines.append("")
    return lines


def _touches(cell: glance.Cell, decision: ranking.Decision, moved: set[str]) -> bool:
    """Whether a member that only one run named (``moved``) has, in one of ``cell``'s decision
    groups, a pair with a member of ``decision`` that touches the margin."""
    return any(
        ranking.touches_margin(r, s)
        for r in cell.rows
        if r["mechanism"] in moved
        for s in cell.rows
        if s["mechanism"] in decision.members
        and s["mechanism"] != r["mechanism"]
        and ranking.group_key(s) == ranking.group_key(r)
    )


def _by_mechanism(table: pd.DataFrame) -> list[list[Any]]:
    out = []
    for mech in mechanism_order(table["mechanism"]) if len(table) else []:
        sub = table[table["mechanism"] == mech]
        changes = [float(v) for v in sub["ratio_change"] if not is_missing(v)]
        absolute = [float(v) for v in sub["median_ratio"] if not is_missing(v)]
        c = Counter(sub["change"])
        out.append(
            [
                "baseline" if mech == "none" else code(mech),
                len(sub),
                fmt_ratio(np.median(changes)) if changes else "—",
                c["lower"],
                c["higher"],
                c["unchanged"],
                c["not tested"],
                fmt_ratio(np.median(absolute)) if absolute else "—",
            ]
        )
    return out


def _matching(comp: Comparison) -> list[str]:
    if not comp.ignored_axes:
        return ["**Matching.** Cases are matched on their full identity (`case_id`).", ""]
    how = (
        "automatically (one value in each run, different between them)"
        if comp.auto_ignored
        else "as asked (--ignore)"
    )
    values = "; ".join(
        f"`{a}`: {_show(b)} → {_show(n)}" for a, (b, n) in comp.ignored_values.items()
    )
    return [
        f"**Matching.** Cases are matched on their identity without "
        f"{join([code(a) for a in comp.ignored_axes])}, "
        f"left out {how}: {values}. Labels are the base run's case ids.",
        "",
    ]


def _ratios(r: Row) -> str:
    return f"{fmt_ratio(r['base_time_ratio'])} → {fmt_ratio(r['new_time_ratio'])}"


def _change_text(r: Row) -> str:
    if is_missing(r["ratio_change"]):
        return "—"
    interval = fmt_interval(r["ratio_change_ci_low"], r["ratio_change_ci_high"])
    return f"{fmt_ratio(r['ratio_change'])} {interval}"


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
