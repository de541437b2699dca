"""The "Results by model family" section: per setup, an overview table of time ratios with the
cheapest valid set (:func:`~bench_lib.analysis.ranking.equivalent_set`), every case in detail,
why the invalid ones are invalid, and the figures; and per model family its backward map
(:func:`family_map`). (Named for the tables it writes; the model families themselves live in
:mod:`bench_lib.measuring.families`.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..axes import step_parts
from . import plots
from .backward_map import backward_map, map_figure
from .format import (
    NOT_MEASURED,
    VERDICT_MEANINGS,
    CaseColumn,
    Row,
    case_table,
    caveat,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    ratio_ci,
    records,
    slug,
    table,
    verdict_label,
)
from .ranking import equivalent_set, is_trap, remedy, set_text, trap_notes
from .results import has_adapter, is_missing, mechanism_order, pattern_label_order, setup_key
from .setups import blocks, is_parallel, setup_columns, setup_slug, setup_title, setups

__all__ = [
    "CASE_COLUMNS",
    "MAP_SETUP",
    "best_valid",
    "families",
    "family_map",
    "has_flow",
    "is_eager_float32",
    "overview_cell",
    "setup_tables",
]

#: The set-up a family's backward map shows, in words.
MAP_SETUP = "eager float32, one process"

#: The every-case table's columns (the seed and LoRA sections pick theirs from the same).
CASE_COLUMNS: dict[str, CaseColumn] = {
    "depth": ("depth", lambda r: r["depth"]),
    "pattern": ("pattern", lambda r: r["pattern_label"]),
    "mechanism": (
        "mechanism",
        lambda r: "baseline" if r["mechanism"] == "none" else r["mechanism"],
    ),
    "step time": ("step time (median)", lambda r: fmt_seconds(r.get("median_s"))),
    "time ratio": ("time ratio [95% CI]", ratio_ci),
    "peak": ("peak memory", lambda r: fmt_bytes(r.get("peak_memory_bytes"))),
    "peak ratio": ("peak vs baseline", lambda r: fmt_ratio(r.get("peak_ratio"))),
    "gradients": ("gradients held", lambda r: fmt_bytes(r.get("grad_bytes"))),
    "optimizer state": ("optimizer state", lambda r: fmt_bytes(r.get("optimizer_state_bytes"))),
    "saved": ("saved activations", lambda r: fmt_bytes(r.get("saved_activation_bytes"))),
    "flops ratio": ("FLOP ratio", lambda r: fmt_ratio(r.get("flops_ratio"))),
    "verdict": ("verdict", verdict_label),
}


def columns(*names: str, **renamed: str) -> list[CaseColumn]:
    """:data:`CASE_COLUMNS` by name, with headers renamed by keyword (spaces as ``_``)."""
    out = []
    for name in names:
        header, render = CASE_COLUMNS[name]
        out.append((renamed.get(name.replace(" ", "_"), header), render))
    return out


def best_valid(cells: dict[str, Row], cure: list[Row] | None = None) -> str:
    """The cheapest valid set of one decision group (one depth and frozen setting), cheapest
    first by peak memory then FLOPs: ``requires_grad = no_grad (0.68×)``. Invalid, unmeasured
    and trap mechanisms are never candidates. When none is valid for a reason with a known cure
    (:data:`~bench_lib.analysis.ranking.REMEDIES`), the cure and its set in ``cure`` (the
    group's cases that measure it) are named."""
    best = equivalent_set(cells.values())
    if best:
        return set_text(best)
    known = any(r["validity"] in ("valid", "invalid") for r in cells.values())
    if not known:
        return f"— (validity {NOT_MEASURED})"
    fix = remedy(cells.values())
    if fix is None:
        return "none valid"
    cured = equivalent_set(fix.cases(cure or []))
    return f"{fix.cure}: " + (set_text(cured) if cured else NOT_MEASURED) + " (as run: invalid)"


def overview_cell(row: Row | None) -> str:
    """``0.62×``, ``0.62× (rounding drift ~1e-8/step)`` (valid with a caveat), ``✗ 0.70×
    graph_cut``, ``0.68× (trap)`` (valid by luck) or ``failed: oom``."""
    if row is None:
        return "—"
    if row["validity"] == "failed":
        return f"failed: {row['status']}"
    text = fmt_ratio(row.get("time_ratio"))
    if row["validity"] == "invalid":
        return f"✗ {text} {row.get('verdict') or 'invalid'}"
    if row["validity"] == "valid" and is_trap(row["mechanism"]):
        return f"{text} (trap)"
    note = caveat(row)
    return f"{text} ({note})" if note else text


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
    lines = [
        "Time ratio to the baseline per mechanism (✗: invalid, never ranked). The cheapest valid "
        "set holds every valid mechanism whose interval overlaps the fastest's, cheapest first "
        "by peak memory, then FLOPs:",
        "",
    ]

    def cure(key: tuple[Any, ...]) -> list[Row]:
        """The cases of the same depth and frozen blocks in other frozen modes."""
        pattern = next(iter(keys[key].values()))["pattern"]
        return [
            r
            for k, cells in keys.items()
            if k[0] == key[0] and k[2] == key[2] and k != key
            for r in cells.values()
            if r["pattern"] == pattern
        ]

    lines += table(
        ["depth", "pattern", "frozen blocks", *mechanisms, "cheapest valid set"],
        [
            [
                k[0],
                k[1],
                k[2],
                *(overview_cell(keys[k].get(m)) for m in mechanisms),
                best_valid(keys[k], cure(k)),
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
    lines += case_table(
        detail,
        columns(
            "depth",
            "pattern",
            "mechanism",
            "step time",
            "time ratio",
            "peak",
            "peak ratio",
            "flops ratio",
            "verdict",
        ),
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
    # "vs depth" only where the set-up has two depths or more (one depth: every case at it).
    where = "vs depth" if len(per_depth) >= 2 else f"at depth {depth}"
    return {
        f"{slug}-time-memory.png": (
            plots.time_memory_vs_depth(
                sub, f"Time ratio to the baseline and peak memory {where}: {title}"
            ),
            f"Time ratio to the baseline with its 95% interval, and peak memory, {where}",
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


def is_eager_float32(row: Row) -> bool:
    """The row is a single-process float32 case with no step axis (autocast, compile,
    checkpointing, a plugin's): the set-up a backward map shows."""
    if is_parallel(row) or str(row.get("dtype")) != "float32":
        return False
    return not step_parts({k: None if is_missing(v) else v for k, v in row.items()})


def has_flow(row: Row) -> bool:
    """The row carries a measured ``block_flow``."""
    return isinstance(row.get("block_flow"), (list, tuple))


def family_map(
    model: str, rows: list[Row], columns: list[str]
) -> tuple[list[str], dict[str, Figure]]:
    """Model family ``model``'s backward map (:mod:`bench_lib.analysis.backward_map`): the
    link with its one-line caption, and the figure by file name. ``rows`` are the family's rows
    (LoRA and eval-mode cases included: the map names them in their labels), ``columns`` the
    set-up's axes (:func:`~bench_lib.analysis.setups.setup_columns`). Of the eager float32
    single-process set-ups, the map shows the one with the most measured ``block_flow`` rows
    (the first on a tie), at its most common depth; a family without one gets a sentence."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        if is_eager_float32(r):
            groups.setdefault(setup_key(r, columns), []).append(r)
    counts = {k: sum(has_flow(r) for r in g) for k, g in groups.items()}
    if not any(counts.values()):
        where = "in its eager float32 single-process cases" if groups else "in one process"
        return [
            f"No backward map: the run has no per-block flow (`block_flow`) for {model} {where}.",
            "",
        ], {}
    chosen = groups[max(counts, key=lambda k: counts[k])]
    first = chosen[0]
    parts = setup_title(first, "source_label" in columns).split(" · ")[1:]
    scenario = ["seed scenario"] if first.get("scenario") == "seed" else []
    m = backward_map(chosen, " · ".join([MAP_SETUP, *scenario, *parts]))
    name = f"{slug(model)}-backward-map.png"
    alt = f"Backward map of {model}: what backward did to each block, per pattern and mechanism"
    caption = (
        f"*Backward map*, depth {m.depth}, {MAP_SETUP}: per block, whether backward computed "
        "its weights' gradients (w), its input's (x), both or neither; ✗ marks a starved "
        "trainable block, a moved frozen one or changed buffers, ≈ rounding drift."
    )
    return [f"![{alt}]({name})", "", caption, ""], {name: map_figure(m)}


def families(frame: pd.DataFrame) -> tuple[list[str], dict[str, Figure]]:
    """The section's lines and its figures by file name. LoRA cases are left out (their own
    sections compare them; here a mechanism's cell would mix them with plain freezing)."""
    lines = ["## Results by model family", ""]
    whole = records(frame)  # the backward maps show LoRA cases too
    flow = any(has_flow(r) for r in whole)
    if not flow:
        lines += [
            "No backward maps: this run has no per-block flow (`block_flow`; files written "
            "before the field, or only parallel cases, lack it).",
            "",
        ]
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
        valid = set(frame.loc[frame["validity"] == "valid", "verdict"].dropna())
        lines += [
            f"- {'✓' if v in valid else '✗'} `{v}`: {VERDICT_MEANINGS.get(v, 'see verdict_detail')}"
            for v in seen
        ]
        lines.append("")
    figures: dict[str, Figure] = {}
    with_source = "source_label" in setup_columns(frame)
    groups = setups(frame)
    for model in sorted({str(rows[0]["model"]) for _, rows in groups}):
        lines += [f"### {model}", ""]
        if flow:
            map_lines, map_figures = family_map(
                model, [r for r in whole if str(r["model"]) == model], setup_columns(frame)
            )
            lines += map_lines
            figures.update(map_figures)
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
