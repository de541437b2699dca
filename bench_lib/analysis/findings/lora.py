"""LoRA (peft) beside freezing: against freezing the prefix at a matched trainable count, with
``no_grad`` on a frozen prefix, and how its cost changes with the rank.

Every comparison is between cases of one setup (the same model, sizes and baseline), as a
quotient of two measurements (time: of their time ratios to that baseline, measured in
interleaved pairs; memory, saved activations, FLOPs: of the values themselves).
"""

from __future__ import annotations

import math
from typing import Any

from ..format import (
    Row,
    case_table,
    code,
    div,
    fmt_ratio,
    median,
    metric,
    plural,
    table,
    verdict_label,
)
from ..results import is_missing, setup_key
from ..tables import columns
from . import Facts, Finding, Needs, register
from .common import validity_summary

__all__ = ["MATCH_WITHIN", "LoraAgainstPrefix", "LoraNoGrad", "LoraRank", "matched_pairs"]

#: The most two trainable counts may differ (larger over smaller) and still be matched.
MATCH_WITHIN = 1.25

#: (label, column) of the quantities the comparisons set side by side; time is the quotient of
#: time ratios to the shared baseline, the others of the values.
_QUANTITIES: tuple[tuple[str, str], ...] = (
    ("time", "time_ratio"),
    ("peak memory", "peak_memory_bytes"),
    ("saved activations", "saved_activation_bytes"),
    ("FLOPs", "flops_ratio"),
)


def _setup(f: Facts, row: Row) -> str:
    """``"bert d4 w128 b8"`` (with the scope when the report holds several)."""
    return f"{f.scope(row)}{row['model']} d{row['depth']} w{row['width']} b{row['batch_size']}"


def _rank(row: Row) -> int:
    value: Any = row.get("lora_rank")
    return int(value) if not is_missing(value) else 0


def _count(row: Row) -> float:
    value: Any = row.get("trainable_params")
    return float(value) if not is_missing(value) else math.nan


def _spread(a: Row, b: Row) -> float:
    """Larger over smaller trainable count (NaN when either is unknown or 0)."""
    x, y = _count(a), _count(b)
    if not (x > 0 and y > 0):
        return math.nan
    return max(x, y) / min(x, y)


def _q(a: Row, b: Row, column: str) -> float:
    return div(a.get(column), b.get(column))


def _fmt_count(row: Row) -> str:
    value = _count(row)
    return f"{value:,.0f}" if math.isfinite(value) else "—"


def _lora(f: Facts, **axes: Any) -> list[Row]:
    return f.where(adapter="lora", **axes)


def _by_setup(rows: list[Row]) -> dict[tuple[Any, ...], list[Row]]:
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault(setup_key(r), []).append(r)
    return groups


def _quotients(pairs: list[tuple[Row, Row]]) -> str:
    """``"time a median of 0.9x (...), peak memory ..."`` of ``a`` over ``b`` in ``pairs``."""
    parts = []
    for label, column in _QUANTITIES:
        q = [v for a, b in pairs if math.isfinite(v := _q(a, b, column))]
        parts.append(metric(label, q, fmt_ratio, "", "pair"))
    return ", ".join(parts)


# ---------------------------------------------------------------- LoRA against the prefix


def matched_pairs(f: Facts) -> list[tuple[Row, Row]]:
    """(LoRA on the whole model, prefix frozen with ``requires_grad``) per setup: for each
    prefix case, the LoRA rank whose trainable count is nearest to its own (in ratio). Whether
    they are matched is :func:`_spread` against :data:`MATCH_WITHIN`."""
    freezing = _by_setup(f.where(pattern="prefix", mechanism="requires_grad", frozen_mode="train"))
    out = []
    for key, lora in _by_setup(_lora(f, pattern="none")).items():
        for prefix in freezing.get(key, []):
            known = [r for r in lora if math.isfinite(_spread(r, prefix))]
            if known:
                out.append((min(known, key=lambda r: _spread(r, prefix)), prefix))
    return out


@register
class LoraAgainstPrefix(Finding):
    name = "lora_vs_prefix"
    order = 80
    title = "LoRA against freezing the prefix, at a matched trainable count"
    label = "LoRA against freezing the prefix (matched trainable count)"
    needs = Needs(
        where={"adapter": ("lora",), "pattern": ("none",)}, columns=("time_ratio",), adapters=True
    )

    def summary(self, f: Facts) -> str:
        pairs = matched_pairs(f)
        if not pairs:
            return "no prefix frozen with `requires_grad` in the same setups to compare with."
        matched = [(a, b) for a, b in pairs if _spread(a, b) <= MATCH_WITHIN]
        if not matched:
            a, b = min(pairs, key=lambda p: _spread(*p))
            return (
                f"unmatched: no LoRA rank came within {MATCH_WITHIN:g}× of the prefix's "
                f"trainable count (closest: rank {_rank(a)} trains {_fmt_count(a)}, the prefix "
                f"{_fmt_count(b)})."
            )
        lora = [a for a, _ in matched]
        return (
            f"LoRA on the whole model against the prefix frozen with `requires_grad` "
            f"({plural(len(matched), 'pair')}, trainable counts within {MATCH_WITHIN:g}×): "
            f"{_quotients(matched)}; LoRA {validity_summary(lora, patterns=False)}."
        )

    def detail(self, f: Facts) -> list[str]:
        if not self.rows(f):
            return [
                "No LoRA case on the whole model was measured in this run (run with "
                "`--bench-adapter lora --bench-pattern none,prefix`)."
            ]
        pairs = matched_pairs(f)
        lines = [
            "Each setup's prefix frozen with `requires_grad` (the lower half of the blocks out "
            "of training) is set against LoRA on the whole model (every block adapted, its "
            "base weights frozen) at the rank whose trainable count (`trainable_params`: "
            "adapters, or unfrozen blocks, plus what is outside the blocks) is nearest to the "
            f"prefix's. They are matched when the larger count is at most {MATCH_WITHIN:g}× "
            "the smaller. Quotients are LoRA over the prefix: time of their time ratios to the "
            "shared baseline, the others of the values.",
            "",
        ]
        if not pairs:
            return [*lines, "No setup has both, so nothing is compared."]
        lines += table(
            [
                "setup",
                "rank",
                "LoRA trains",
                "prefix trains",
                "counts",
                *(label for label, _ in _QUANTITIES),
                "LoRA",
                "prefix",
            ],
            [
                [
                    _setup(f, a),
                    _rank(a),
                    _fmt_count(a),
                    _fmt_count(b),
                    f"{fmt_ratio(_spread(a, b))} "
                    + ("matched" if _spread(a, b) <= MATCH_WITHIN else "unmatched"),
                    *(fmt_ratio(_q(a, b, column)) for _, column in _QUANTITIES),
                    verdict_label(a),
                    verdict_label(b),
                ]
                for a, b in pairs
            ],
        )
        return lines


# ---------------------------------------------------------------- no_grad under LoRA


def _twins(f: Facts) -> list[tuple[Row, Row | None, Row | None]]:
    """(LoRA with the prefix under ``no_grad``, the same under ``requires_grad``, LoRA on the
    whole model) of one setup and rank."""

    def key(r: Row) -> tuple[Any, ...]:
        return (*setup_key(r), _rank(r))

    rg = {key(r): r for r in _lora(f, pattern="prefix", mechanism="requires_grad")}
    whole = {key(r): r for r in _lora(f, pattern="none")}
    return [
        (r, rg.get(key(r)), whole.get(key(r)))
        for r in _lora(f, pattern="prefix", mechanism="no_grad")
    ]


@register
class LoraNoGrad(Finding):
    name = "lora_no_grad"
    order = 81
    title = "LoRA with the frozen prefix under `no_grad`"
    label = "LoRA with `no_grad` on the frozen prefix"
    needs = Needs(
        where={"adapter": ("lora",), "pattern": ("prefix",), "mechanism": ("no_grad",)},
        columns=("time_ratio",),
        adapters=True,
    )

    def summary(self, f: Facts) -> str:
        twins = _twins(f)
        rows = [r for r, _, _ in twins]
        text = f"{plural(len(rows), 'case')}, {validity_summary(rows, patterns=False)}"
        rg = [(r, b) for r, b, _ in twins if b is not None]
        whole = [(r, w) for r, _, w in twins if w is not None]
        if rg:
            text += (
                f"; against `requires_grad` on the same prefix: "
                f"{fmt_ratio(median([_q(a, b, 'time_ratio') for a, b in rg]))} the time, "
                f"{fmt_ratio(median([_q(a, b, 'peak_memory_bytes') for a, b in rg]))} the peak"
            )
        if whole:
            text += (
                f"; against LoRA on the whole model: "
                f"{fmt_ratio(median([_q(a, b, 'time_ratio') for a, b in whole]))} the time, "
                f"{fmt_ratio(median([_q(a, b, 'saved_activation_bytes') for a, b in whole]))} "
                f"the saved activations"
            )
        return text + " (medians)."

    def detail(self, f: Facts) -> list[str]:
        twins = _twins(f)
        if not twins:
            return [
                "No LoRA case with the frozen prefix under `no_grad` was measured in this run "
                "(run with `--bench-adapter lora --bench-pattern none,prefix "
                "--bench-mechanism no_grad,requires_grad`)."
            ]
        lines = [
            "LoRA on the upper half with the lower half (no adapters) under `no_grad`, against "
            "the same LoRA with the lower half under `requires_grad`, and against LoRA on the "
            "whole model (same rank). An op whose inputs need no gradient is not recorded "
            "either way, so `no_grad` and `requires_grad` on a frozen prefix should cost the "
            "same; against LoRA on every block, the lower half's adapters and their saved "
            "activations are what is saved.",
            "",
        ]
        header = ["setup", "rank", "verdict"]
        for name in ("`requires_grad`", "whole-model LoRA"):
            header += [f"{label} vs {name}" for label, _ in _QUANTITIES[:3]]
        cells = []
        for r, rg, whole in twins:
            line = [_setup(f, r), _rank(r), verdict_label(r)]
            for other in (rg, whole):
                line += [
                    fmt_ratio(_q(r, other, c)) if other is not None else "—"
                    for _, c in _QUANTITIES[:3]
                ]
            cells.append(line)
        return [*lines, *table(header, cells)]


# ---------------------------------------------------------------- rank


def _rank_groups(f: Facts) -> list[list[Row]]:
    """LoRA cases of one setup, pattern, mechanism and frozen mode, by rank (two ranks or
    more)."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in _lora(f):
        key = (*setup_key(r), r["pattern_label"], r["mechanism"])
        groups.setdefault(key, []).append(r)
    return [sorted(g, key=_rank) for g in groups.values() if len({_rank(r) for r in g}) > 1]


@register
class LoraRank(Finding):
    name = "lora_rank"
    order = 82
    title = "How LoRA's cost changes with the rank"
    label = "LoRA rank"
    needs = Needs(where={"adapter": ("lora",)}, columns=("time_ratio",), adapters=True)

    def summary(self, f: Facts) -> str:
        groups = _rank_groups(f)
        if not groups:
            ranks = sorted({_rank(r) for r in self.rows(f)})
            return f"one rank per case only ({', '.join(map(str, ranks))}): nothing to compare."
        pairs = [(g[-1], g[0]) for g in groups]
        steps = sorted({(_rank(lo), _rank(hi)) for hi, lo in pairs})
        growth = median([_q(hi, lo, "adapter_params") for hi, lo in pairs])
        return (
            f"from rank {' / '.join(f'{a} to {b}' for a, b in steps)} the adapters grew "
            f"{fmt_ratio(growth)}, and the step took "
            f"{fmt_ratio(median([_q(hi, lo, 'time_ratio') for hi, lo in pairs]))} the time and "
            f"{fmt_ratio(median([_q(hi, lo, 'peak_memory_bytes') for hi, lo in pairs]))} the "
            f"peak memory (medians over {plural(len(pairs), 'case group')})."
        )

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No LoRA case was measured in this run (run with `--bench-adapter lora "
                "--bench-lora-rank 8,64`)."
            ]
        lines = []
        groups = _rank_groups(f)
        if groups:
            lines += [
                "Highest rank over lowest, per group of cases that differ only in the rank: "
                + _quotients([(g[-1], g[0]) for g in groups])
                + ".",
                "",
            ]
        ordered = sorted(
            rows,
            key=lambda r: (
                _setup(f, r),
                str(r["pattern_label"]) != "none",
                str(r["mechanism"]),
                _rank(r),
            ),
        )
        lines += [
            "Every LoRA case (ratios to the baseline: full fine-tuning of the same model):",
            "",
            *case_table(
                ordered,
                [
                    ("setup", lambda r: _setup(f, r)),
                    ("pattern", lambda r: r["pattern_label"]),
                    ("mechanism", lambda r: "—" if r["mechanism"] == "none" else r["mechanism"]),
                    ("rank", _rank),
                    (
                        "adapter params",
                        lambda r: (
                            f"{float(r['adapter_params']):,.0f}"
                            if not is_missing(r.get("adapter_params"))
                            else "—"
                        ),
                    ),
                    ("trainable", _fmt_count),
                    *columns(
                        "time ratio",
                        "peak",
                        "peak ratio",
                        "gradients",
                        "optimizer state",
                        "saved",
                        "flops ratio",
                        "verdict",
                        gradients="gradients",
                    ),
                ],
            ),
        ]
        invalid = [r for r in ordered if r["validity"] == "invalid"]
        if invalid:
            lines += ["", "Why the invalid LoRA cases are invalid:", ""]
            lines += [f"- ✗ {code(r['case_id'])}: {r.get('verdict_detail')}" for r in invalid]
        return lines
