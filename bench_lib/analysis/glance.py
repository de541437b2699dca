"""The report's first screen (:func:`decisions`) and the family × pattern table
(:func:`family_pattern_table`).

The first screen is what a user takes away: one row per situation (a frozen prefix; frozen
blocks in the middle or non-consecutive; frozen BatchNorm blocks; under DDP; under FSDP; LoRA
against freezing) with the equivalent set to use
(:func:`~bench_lib.analysis.ranking.decide`), what it costs against the baseline and over how
many cases, what not to use and why; then the four seed questions, each one plain sentence with
its measured number; then links to the findings' sections that hold the evidence. Every number
comes from the data. :data:`FIRST_SCREEN_WORDS` and :data:`FIRST_SCREEN_WIDTH` bound it.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..vocab import MODELS
from .findings import Facts
from .findings.lora import MATCH_WITHIN, matched_pairs
from .format import (
    NOT_MEASURED,
    Row,
    anchor,
    caveat,
    code,
    div,
    fmt_pct,
    fmt_ratio,
    join,
    median,
    table,
    values,
)
from .header import foreign_line
from .ranking import REMEDIES, Decision, Remedy, decide, is_trap, remedy
from .results import has_adapter, has_step_axis, mechanism_order, order_names, pattern_order

__all__ = [
    "FIRST_SCREEN_WIDTH",
    "FIRST_SCREEN_WORDS",
    "batchnorm_models",
    "cheapest_section",
    "decisions",
    "family_pattern_table",
    "word_count",
]

#: The first screen's bounds: words (see :func:`word_count`) and characters per line.
FIRST_SCREEN_WORDS = 250
FIRST_SCREEN_WIDTH = 160

#: Why a mechanism is not to be used, by the verdict it got (a few words each).
_WHY_NOT: dict[str, str] = {
    "graph_cut": "graph cut",
    "frozen_buffer_changed": "move BatchNorm statistics",
    "frozen_param_moved": "move frozen weights",
    "grad_mismatch": "wrong gradients",
    "error": "refused by the set-up",
}

#: The patterns of the "middle or non-consecutive" situation.
_INNER = ("middle", "alternating", "explicit")


def word_count(text: str) -> int:
    """Words of markdown ``text``: whitespace-separated tokens holding a letter or a digit
    (table rules, pipes and ``=`` are not words)."""
    return sum(any(c.isalnum() for c in token) for token in text.split())


def _plain(f: Facts) -> list[Row]:
    """Single-process, eager float32 cases without an adapter, baselines left out."""
    return [
        r for r in f.ok if r["mechanism"] != "none" and not has_adapter(r) and not has_step_axis(r)
    ]


def batchnorm_models(f: Facts) -> list[str]:
    """Model families whose frozen BatchNorm statistics moved in train mode (a non-trap case
    with ``frozen_buffer_changed``): the ones the eval-mode cure is for."""
    return order_names(
        (
            r["model"]
            for r in _plain(f)
            if r.get("verdict") == "frozen_buffer_changed" and not is_trap(r["mechanism"])
        ),
        MODELS,
    )


# ---------------------------------------------------------------------------- the decisions


def _verdict(row: Row) -> str:
    return str(row.get("verdict") or row.get("status"))


def _bad(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Non-trap mechanisms not valid in some of ``rows`` (invalid, or refused), with those
    rows."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        if r["validity"] in ("invalid", "failed") and not is_trap(r["mechanism"]):
            out.setdefault(str(r["mechanism"]), []).append(r)
    return out


def _avoid(rows: Sequence[Row], use: Decision | None) -> str:
    """``"`no_grad`, `inference_mode`: cut the graph (47 of 47)"``: the mechanisms not to use
    and why; without any, the slowest valid mechanism outside the set."""
    bad = _bad(rows)
    by_verdict: dict[str, list[str]] = {}
    for mech in mechanism_order(bad):
        top = Counter(_verdict(r) for r in bad[mech]).most_common(1)[0][0]
        by_verdict.setdefault(top, []).append(mech)
    parts = []
    for verdict, mechs in by_verdict.items():
        n = sum(len(bad[m]) for m in mechs)
        total = sum(r["mechanism"] in mechs for r in rows)
        parts.append(f"{', '.join(mechs)}: {_WHY_NOT.get(verdict, verdict)} ({n}/{total})")
    if parts:
        return "; ".join(parts)
    others = {
        str(r["mechanism"])
        for r in rows
        if r["validity"] == "valid" and not is_trap(r["mechanism"])
    } - set(use.members if use else ())
    if not others:
        return "—"
    slow = {
        m: median(values([r for r in rows if r["mechanism"] == m], "time_ratio")) for m in others
    }
    worst = max(slow, key=lambda m: slow[m])
    return f"{worst}: slower ({fmt_ratio(slow[worst])})"


def _use(d: Decision | None, prefix: str = "") -> str:
    """``"no_grad = requires_grad (5/7 groups): 0.68×, 0.64× (7 cases)"``."""
    if d is None:
        return prefix + "none valid"
    text = prefix + " = ".join(d.members)
    notes = [n for n in (f"{d.agree}/{d.groups} groups" if d.disagree else "",
                         d.caveat(short=True)) if n]  # fmt: skip
    text += f" ({'; '.join(notes)})" if notes else ""
    return f"{text}: {fmt_ratio(d.time_ratio)}, {fmt_ratio(d.peak_ratio)} ({d.cases})"


def _situation(label: str, rows: Sequence[Row]) -> list[str] | None:
    """A decision row over ``rows`` (None without any): the set among the mechanisms valid in
    every one of its cases."""
    if not rows:
        return None
    bad = _bad(rows)
    d = decide([r for r in rows if r["mechanism"] not in bad])
    return [label, _use(d), _avoid(rows, d)]


def _batchnorm(f: Facts) -> list[str] | None:
    models = batchnorm_models(f)
    if not models:
        return None
    fix = REMEDIES["frozen_buffer_changed"]
    rows = [r for r in _plain(f) if r["model"] in models]
    train = [r for r in rows if r.get(fix.axis) != fix.value and not is_trap(r["mechanism"])]
    moved = [r for r in train if r.get("verdict") == "frozen_buffer_changed"]
    cured = fix.cases(rows)
    bad = _bad(cured)
    d = decide([r for r in cured if r["mechanism"] not in bad])
    # The cure's own graph cuts are the middle row's business: the row names the set only.
    avoid = f"train mode: stats move ({len(moved)}/{len(train)}); eval: uses running stats"
    use = _use(d, "eval + ") if cured else f"eval mode ({NOT_MEASURED})"
    return ["BatchNorm", use, avoid]


def _lora(f: Facts) -> list[str] | None:
    pairs = [(a, b) for a, b in matched_pairs(f) if a["status"] == b["status"] == "ok"]
    if not pairs:
        return None
    # The prefix frozen with requires_grad over LoRA at a matched trainable count.
    time = median([div(b.get("time_ratio"), a.get("time_ratio")) for a, b in pairs])
    peak = median([div(b.get("peak_memory_bytes"), a.get("peak_memory_bytes")) for a, b in pairs])
    notes = sorted({n for a, _ in pairs if (n := caveat(a))})
    bad = [a for a, _ in pairs if a["validity"] != "valid"]
    matched = f"±{MATCH_WITHIN - 1:.0%} trainable count"
    if time <= 1:
        use = (
            f"prefix frozen (requires_grad): {fmt_ratio(time)}, {fmt_ratio(peak)} "
            f"of LoRA's ({len(pairs)})"
        )
        avoid = f"LoRA at {matched}: slower"
    else:
        use = (
            f"LoRA: {fmt_ratio(1 / time)}, {fmt_ratio(1 / peak)} of the frozen prefix's "
            f"({len(pairs)})"
        )
        avoid = f"freezing at {matched}: slower"
    if bad:
        avoid += f"; ✗ {_verdict(bad[0])} ({len(bad)}/{len(pairs)})"
    if notes:
        avoid += f"; valid, {notes[0]}"
    return ["LoRA vs freezing", use, avoid]


def _train(f: Facts) -> list[Row]:
    """The plain cases in train mode of the families without BatchNorm trouble."""
    bn = set(batchnorm_models(f))
    return [
        r for r in _plain(f) if r.get("frozen_mode") in ("train", None) and r["model"] not in bn
    ]


def _under(f: Facts, setup: str) -> list[Row]:
    """The frozen cases of one parallel set-up (refused ones included)."""
    return [r for r in f.parallel if r["parallel"] == setup and r["mechanism"] != "none"]


def _table(f: Facts) -> list[str]:
    train = _train(f)
    rows = [
        _situation("frozen prefix", [r for r in train if r["pattern"] == "prefix"]),
        _situation("middle / non-consecutive", [r for r in train if r["pattern"] in _INNER]),
        _batchnorm(f),
        _situation("under DDP", _under(f, "ddp")),
        _situation("under FSDP2", _under(f, "fsdp")),
        _lora(f),
    ]  # fmt: skip
    cells = [r for r in rows if r is not None]
    if not cells:
        return []
    head = ["situation", "use (equivalent set): time, peak vs baseline (cases)", "avoid: why"]
    # Each row stays within the first screen's width: mechanism names without code marks.
    return table(head, cells)


# ---------------------------------------------------------------------------- the questions


def _no_grad(f: Facts) -> str | None:
    rows = [r for r in f.where(mechanism="no_grad")]
    if not rows:
        return None
    valid = [r for r in rows if r["validity"] == "valid"]
    cut = [r for r in rows if r.get("verdict") == "graph_cut"]
    text = (
        f"`no_grad` records no graph: on a frozen prefix it takes "
        f"{fmt_ratio(median(values(valid, 'time_ratio')))} the baseline's time and "
        f"{fmt_ratio(median(values(valid, 'peak_ratio')))} its peak ({len(valid)} valid cases)"
    )
    if cut:
        text += f"; after trainable blocks it cuts the graph ({len(cut)}/{len(rows)} cases)"
    return text + "."


def _optimizer_only(f: Facts) -> str | None:
    from .findings.common import pairs, quotients

    both = pairs(f.where(mechanism="optimizer_only"), f.where(mechanism="requires_grad"))
    if not both:
        return None
    needed = sum(a["validity"] == "invalid" and b["validity"] == "valid" for a, b in both)
    time = fmt_ratio(median(quotients(both, "time_ratio")))
    peak = fmt_ratio(median(quotients(both, "peak_memory_bytes")))
    must = (
        f"X must be frozen when only Y is optimized in {needed}/{len(both)} cases"
        if needed
        else f"X need not be frozen when only Y is optimized (correct in {len(both)}/"
        f"{len(both)} cases)"
    )
    return f"{must}, but not freezing it costs {time} the time and {peak} the peak."


def _backprop(f: Facts) -> str | None:
    rows = f.where(pattern="middle")
    rg = [r for r in rows if r["mechanism"] == "requires_grad" and r["validity"] == "valid"]
    if not rg:
        return None
    skipped = fmt_pct(1 - median(values(rg, "flops_backward_ratio")))
    kept = fmt_pct(median(values(rg, "saved_activation_ratio")))
    oo = [r for r in rows if r["mechanism"] == "optimizer_only"]
    text = (
        f"Through frozen middle blocks `requires_grad` still passes the input gradient and keeps "
        f"{kept} of the saved activations, skipping weight gradients ({skipped} of backward "
        f"FLOPs)"
    )
    if oo:
        full = fmt_pct(median(values(oo, "flops_backward_ratio")))
        text += f"; `optimizer_only` computes all ({full})"
    cut = mechanism_order(r["mechanism"] for r in rows if r.get("verdict") == "graph_cut")
    if cut:
        text += f"; {join([code(m) for m in cut])} stop it there"
    return text + "."


def _non_consecutive(f: Facts) -> str | None:
    rows = [r for r in _train(f) if r["pattern"] in ("alternating", "explicit")]
    if not rows:
        return None
    bad = _bad(rows)
    d = decide([r for r in rows if r["mechanism"] not in bad])
    if d is None:
        return f"No mechanism froze non-consecutive blocks validly ({len(rows)} cases)."
    cut = [m for m in mechanism_order(bad) if any(r.get("verdict") == "graph_cut" for r in bad[m])]
    text = f"Non-consecutive blocks freeze with {d.names()} ({fmt_ratio(d.time_ratio)} time)"
    if cut:
        text += (
            f"; {join([code(m) for m in cut])} {'cuts' if len(cut) == 1 else 'cut'} the graph there"
        )
    return text + "."


def decisions(f: Facts, links: Mapping[str, str]) -> list[str]:
    """The first screen: the decision table, the four questions' sentences and links to the
    evidence (``links``: finding name -> its section's heading)."""
    lines = ["## Decisions", ""]
    lines += [*_table(f), ""]
    questions: list[tuple[str, Callable[[Facts], str | None]]] = [
        ("no_grad", _no_grad),
        ("optimizer_only", _optimizer_only),
        ("middle", _backprop),
        ("non_consecutive", _non_consecutive),
    ]
    for name, answer in questions:
        text = answer(f)
        if text is None:
            continue
        heading = links.get(name)
        lines += [*_wrap(text + (f" [more]({anchor(heading)})" if heading else "")), ""]
    refs = [
        f"[{heading.split('. ', 1)[0].lstrip('# ')}]({anchor(heading)})"
        for name, heading in links.items()
        if name not in {n for n, _ in questions}
    ]
    if refs:
        lines += [*_wrap(f"Evidence: {' '.join(refs)} [run](#the-run)."), ""]
    return lines


def _wrap(text: str) -> list[str]:
    """A paragraph in lines of at most :data:`FIRST_SCREEN_WIDTH` characters (never inside a
    word or a link)."""
    # A few characters short of the limit: markdown escapes may lengthen a line when rendered.
    return textwrap.wrap(
        text, FIRST_SCREEN_WIDTH - 8, break_long_words=False, break_on_hyphens=False
    ) or [""]


# ---------------------------------------------------------------------------- family × pattern


@dataclass(frozen=True)
class Cell:
    """One family × pattern cell: its rows (train mode, no adapter, no step axis), the set it
    names (of the cure's cases where every case as run is invalid and a cure exists), and the
    cure's set beside it (``cure``) where the cure is measured too."""

    rows: list[Row]
    decision: Decision | None
    fix: Remedy | None
    cured: Decision | None
    #: Every case as run is invalid: the cure's set is the answer.
    dead_end: bool

    def text(self, validity_measured: bool = True) -> str:
        if not self.rows:
            return "—"
        if self.decision is not None:
            text = self.decision.cell()
            if self.fix is not None:
                text += f"; {self.fix.cure}: " + (self.cured.cell() if self.cured else NOT_MEASURED)
            return text
        if not validity_measured:
            return f"validity {NOT_MEASURED}"
        if self.fix is None:
            return "none valid"
        # Invalid as run, with a known cure: the cure leads, not a dead end.
        cured = self.cured.cell() if self.cured else NOT_MEASURED
        return f"{self.fix.cure}: {cured} (as run: invalid)"

    @property
    def answer(self) -> Decision | None:
        """The set a user takes away: as run where one is valid, else the cure's."""
        return self.decision if self.decision is not None else self.cured


def cell(rows: list[Row]) -> Cell:
    """The cell of ``rows`` (one family and pattern)."""
    fix = remedy(rows)
    cured = fix.cases(rows) if fix else []
    d = decide([r for r in rows if not any(r is c for c in cured)])
    return Cell(rows, d, fix, decide(cured) if fix else None, d is None)


def family_pattern_cells(f: Facts) -> dict[tuple[str, str], dict[str, Cell]]:
    """The cells by (scope + family, seed mark) and pattern, in the table's order. LoRA cases
    and cases with a step axis (autocast, compile, checkpointing) are left out (their own
    findings compare them)."""
    rows = _plain(f)
    if not rows:
        return {}
    models = order_names((r["model"] for r in rows), MODELS)

    def key(r: Row) -> tuple[str, str]:
        return f.scope(r), str(r["model"])

    keys = sorted({key(r) for r in rows}, key=lambda k: (k[0], models.index(k[1])))
    seeds = {key(r) for r in rows if r.get("scenario") == "seed"}
    patterns = [p for p in pattern_order(r["pattern"] for r in rows) if p != "none"]
    return {
        (f"{k[0]}{k[1]}", " (seed)" if k in seeds else ""): {
            p: cell([r for r in rows if key(r) == k and r["pattern"] == p]) for p in patterns
        }
        for k in keys
    }


def family_pattern_table(f: Facts) -> list[str]:
    """Per model family (and scope) and pattern: the cheapest valid set
    (:func:`~bench_lib.analysis.ranking.decide` over the cell's decision groups), and, where a
    known cure exists for what made cases invalid, the cure's set."""
    cells = family_pattern_cells(f)
    if not cells:
        return []
    patterns = list(next(iter(cells.values())))
    lines = [
        [name + seed, *(c.text(f.validity_measured) for c in by_pattern.values())]
        for (name, seed), by_pattern in cells.items()
    ]
    return [
        "The cheapest valid set per model family and frozen pattern: every valid mechanism the "
        "rounds could not tell from the fastest (its paired interval inside 1 ± the margin, or "
        "holding 1), cheapest first by peak memory, then FLOPs (traps never count), with the "
        "first one's median time and peak-memory ratios to the baseline. A cell over several "
        "decision groups (depths, optimizers) names the set most of them name, and says so "
        "when they disagree. A cure follows where one exists.",
        "",
        *table(["family", *patterns], lines),
    ]


def cheapest_section(f: Facts) -> list[str]:
    """The "Cheapest valid set by family and pattern" section, with the foreign-memory note."""
    lines = ["## Cheapest valid set by family and pattern", "", *family_pattern_table(f), ""]
    foreign = foreign_line(f.ok)
    if foreign:
        lines += [f"**Foreign memory**: {foreign}", ""]
    return lines
