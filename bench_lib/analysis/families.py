"""The "Results by model family" section: per setup, an overview table of time ratios with the
best valid mechanism, every case in detail, why the invalid ones are invalid, and the figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .format import (
    NOT_MEASURED,
    VERDICT_MEANINGS,
    Row,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    ratio_ci,
    table,
    verdict_label,
)
from .ranking import candidates, is_trap, tied, trap_notes
from .results import has_adapter, is_missing, mechanism_order, pattern_label_order
from .setups import blocks, setup_columns, setup_slug, setup_title, setups

__all__ = ["best_valid", "families", "overview_cell", "setup_tables"]


def best_valid(cells: dict[str, Row]) -> str:
    """The fastest valid mechanism of one (depth, pattern) row, and those tied with it (their
    intervals overlap its own). Invalid, unmeasured and trap mechanisms are never candidates."""
    valid = {str(r["mechanism"]): r for r in candidates(cells.values())}
    if not valid:
        known = any(r["validity"] in ("valid", "invalid") for r in cells.values())
        return "none valid" if known else f"— (validity {NOT_MEASURED})"
    best_m = min(valid, key=lambda m: float(valid[m]["time_ratio"]))
    best = valid[best_m]
    ties = tied(best, list(valid.values()))
    text = f"{best_m} ({fmt_ratio(best['time_ratio'])})"
    return text + (f"; tied: {', '.join(ties)}" if ties else "")


def overview_cell(row: Row | None) -> str:
    """``0.62×``, ``✗ 0.70× graph_cut``, ``0.68× (trap)`` (valid by luck) or ``failed: oom``."""
    if row is None:
        return "—"
    if row["validity"] == "failed":
        return f"failed: {row['status']}"
    text = fmt_ratio(row.get("time_ratio"))
    if row["validity"] == "invalid":
        return f"✗ {text} {row.get('verdict') or 'invalid'}"
    if row["validity"] == "valid" and is_trap(row["mechanism"]):
        return f"{text} (trap)"
    return text


def setup_tables(rows: list[Row]) -> list[str]:
    """The overview and the every-case table of one setup, with the notes that go with them."""
    mechanisms = [m for m in mechanism_order(r["mechanism"] for r in rows) if m != "none"]
    keys: dict[tuple[Any, ...], dict[str, Row]] = {}
    for r in sorted(rows, key=lambda r: int(r["depth"])):
        if r["mechanism"] == "none":
            continue
        key = (int(r["depth"]), str(r["pattern_label"]), blocks(r))
        keys.setdefault(key, {})[str(r["mechanism"])] = r
    labels = pattern_label_order(rows)
    ordered = sorted(keys, key=lambda k: (k[0], labels.index(k[1])))
    lines = ["Time ratio to the baseline per mechanism (✗: invalid, never ranked):", ""]
    lines += table(
        ["depth", "pattern", "frozen blocks", *mechanisms, "best valid mechanism"],
        [
            [
                k[0],
                k[1],
                k[2],
                *(overview_cell(keys[k].get(m)) for m in mechanisms),
                best_valid(keys[k]),
            ]
            for k in ordered
        ],
    )
    notes = trap_notes(rows, lambda r: f"depth {r['depth']} {r['pattern_label']} ")
    if notes:
        lines += ["", *(f"(trap) {n}" for n in notes)]
    lines += ["", "Every case:", ""]
    all_mechanisms = mechanism_order(r["mechanism"] for r in rows)
    detail = sorted(
        rows,
        key=lambda r: (
            int(r["depth"]),
            labels.index(str(r["pattern_label"])),
            all_mechanisms.index(str(r["mechanism"])),
        ),
    )
    lines += table(
        [
            "depth",
            "pattern",
            "mechanism",
            "step time (median)",
            "time ratio [95% CI]",
            "peak memory",
            "peak vs baseline",
            "FLOP ratio",
            "verdict",
        ],
        [
            [
                r["depth"],
                r["pattern_label"],
                "baseline" if r["mechanism"] == "none" else r["mechanism"],
                fmt_seconds(r.get("median_s")),
                ratio_ci(r),
                fmt_bytes(r.get("peak_memory_bytes")),
                fmt_ratio(r.get("peak_ratio")),
                fmt_ratio(r.get("flops_ratio")),
                verdict_label(r),
            ]
            for r in detail
        ],
    )
    invalid = [
        r for r in detail if r["validity"] == "invalid" and not is_missing(r.get("verdict_detail"))
    ]
    if invalid:
        lines += ["", "Why the invalid cases are invalid:", ""]
        lines += [
            f"- ✗ `{r['case_id']}` ({r.get('verdict')}): {r['verdict_detail']}" for r in invalid
        ]
    uncounted = sorted(
        {
            op
            for r in rows
            for op in (r.get("flops_uncounted_ops") or [])
            if not is_missing(r.get("flops_uncounted_ops"))
        }
    )
    if uncounted:
        lines += ["", f"FLOP counts miss these operators (no formula): {', '.join(uncounted)}."]
    return lines


def _figures(
    rows: list[Row], ok: list[Row], title: str, slug: str
) -> dict[str, tuple[Figure, str]]:
    """The setup's figures by file name, with their alt texts."""
    sub = pd.DataFrame(rows)
    # The depth with the most cases (the deepest of those): the fullest breakdown.
    per_depth = Counter(int(r["depth"]) for r in ok)
    depth = max(per_depth, key=lambda d: (per_depth[d], d))
    return {
        f"{slug}-time-memory.png": (
            plots.time_memory_vs_depth(sub, f"Step time and peak memory vs depth: {title}"),
            "Median step time and peak memory against depth",
        ),
        f"{slug}-time-ratio.png": (
            plots.ratio_heatmap(sub, f"Time ratio to the baseline: {title}"),
            "Time ratio per pattern and mechanism (✗ hatched: invalid)",
        ),
        f"{slug}-memory-d{depth}.png": (
            plots.memory_breakdown(
                sub[sub["depth"] == depth], f"Memory by category at depth {depth}: {title}"
            ),
            f"Memory by category at depth {depth}",
        ),
    }


def families(frame: pd.DataFrame) -> tuple[list[str], dict[str, Figure]]:
    """The section's lines and its figures by file name. LoRA cases are left out (their own
    sections compare them; here a mechanism's cell would mix them with plain freezing)."""
    lines = ["## Results by model family", ""]
    adapted = frame[[has_adapter(r) for r in frame.to_dict("records")]]
    if len(adapted):
        frame = frame.drop(adapted.index)
        lines += [
            f"{len(adapted)} LoRA cases are left out of these tables and figures: the LoRA "
            "sections of the answers give them.",
            "",
        ]
    seen = [v for v in VERDICT_MEANINGS if (frame["verdict"] == v).any()]
    seen += sorted({str(v) for v in frame["verdict"].dropna()} - set(VERDICT_MEANINGS))
    if seen:
        lines += ["Verdicts in this run:", ""]
        lines += [
            f"- {'✓' if v == 'ok' else '✗'} `{v}`: {VERDICT_MEANINGS.get(v, 'see verdict_detail')}"
            for v in seen
        ]
        lines.append("")
    figures: dict[str, Figure] = {}
    with_source = "source_label" in setup_columns(frame)
    groups = setups(frame)
    for model in sorted({str(rows[0]["model"]) for _, rows in groups}):
        lines += [f"### {model}", ""]
        for _, rows in [s for s in groups if s[1][0]["model"] == model]:
            first = rows[0]
            title = setup_title(first, with_source)
            lines += [f"#### {title}", ""]
            ok = [r for r in rows if r["status"] == "ok"]
            lines += [*setup_tables(rows), ""]
            if not ok:
                continue
            for name, (fig, alt) in _figures(
                rows, ok, title, setup_slug(first, with_source)
            ).items():
                figures[name] = fig
                lines += [f"![{alt}]({name})", ""]
    return lines, figures
