"""The seed scenario: a frozen transformer encoder X feeding a trained MLP Y (AdamW)."""

from __future__ import annotations

import pandas as pd

from ..format import (
    NOT_MEASURED,
    Row,
    case_table,
    code,
    div,
    fmt_bytes,
    fmt_interval,
    fmt_ratio,
    fmt_seconds,
    verdict_label,
)
from ..ranking import equivalent_set, trap_notes
from ..results import mechanism_order
from ..setups import blocks, setup_title, setups
from ..tables import columns
from . import Facts, Finding, Needs, register


def _cases(setup: list[Row]) -> list[Row]:
    """The frozen cases of one setup, in mechanism order."""
    cases = [r for r in setup if r["mechanism"] != "none"]
    order = mechanism_order(r["mechanism"] for r in cases)
    return sorted(cases, key=lambda r: order.index(r["mechanism"]))


def _by_mechanism(cases: list[Row], mechanism: str) -> Row | None:
    return next((r for r in cases if r["mechanism"] == mechanism), None)


def _equivalents(best_set: list[Row]) -> str:
    """`` (equivalent in time: `no_grad`; cheapest first by peak memory, then FLOPs)``."""
    if len(best_set) < 2:
        return ""
    others = ", ".join(code(r["mechanism"]) for r in best_set[1:])
    return (
        f" (equivalent in time, within the noise: {others}; the first is the cheapest by peak "
        f"memory, then FLOPs)"
    )


@register
class Seed(Finding):
    name = "seed"
    order = 50
    title = "The seed scenario: a frozen transformer encoder X feeding a trained MLP Y (AdamW)"
    label = "Seed scenario (frozen transformer X feeding MLP Y)"
    needs = Needs(where={"scenario": ("seed",)}, columns=("time_ratio",), failed=True)

    def _setups(self, f: Facts) -> list[list[Row]]:
        return [rows for _, rows in setups(pd.DataFrame(self.rows(f)))]

    def summary(self, f: Facts) -> str:
        parts = []
        for setup in self._setups(f):
            cases = _cases(setup)
            best_set = equivalent_set(cases)
            if not best_set:
                parts.append(
                    f.scope(setup[0])
                    + (
                        "no mechanism was valid"
                        if f.validity_measured
                        else f"validity {NOT_MEASURED}"
                    )
                )
                continue
            best = best_set[0]
            text = (
                f"the cheapest valid way to freeze X was `{best['mechanism']}`: "
                f"{fmt_ratio(best['time_ratio'])} the baseline's time and "
                f"{fmt_ratio(best.get('peak_ratio'))} its peak memory" + _equivalents(best_set)
            )
            oo, rg = _by_mechanism(cases, "optimizer_only"), _by_mechanism(cases, "requires_grad")
            if oo is not None and rg is not None and oo["status"] == rg["status"] == "ok":
                text += (
                    f"; leaving X trainable, only out of the optimizer, took "
                    f"{fmt_ratio(div(oo.get('time_ratio'), rg.get('time_ratio')))} the time of "
                    f"`requires_grad`"
                )
            parts.append(f.scope(setup[0]) + text)
        return "; ".join(parts) + "."

    def detail(self, f: Facts) -> list[str]:
        if not self.rows(f):
            return [
                "No seed-scenario case was measured in this run (run the `quick` or `default` "
                "profile, or `--bench-model xy`)."
            ]
        lines: list[str] = []
        for setup in self._setups(f):
            lines += [*_setup_detail(setup, f.validity_measured), ""]
        return lines


def _setup_detail(setup: list[Row], validity_measured: bool) -> list[str]:
    first = setup[0]
    base = next((r for r in setup if r["mechanism"] == "none" and r["status"] == "ok"), None)
    frozen = sorted({blocks(r) for r in setup if r["mechanism"] != "none"})
    depth = int(first["depth"])
    frozen_set = {int(b) for r in setup for b in (r.get("frozen_blocks") or [])}
    y_blocks = ", ".join(str(b) for b in range(depth) if b not in frozen_set)
    lines = [
        f"**{setup_title(first)}**, depth {depth}: X = transformer encoder blocks "
        f"{'; '.join(frozen) or '—'} (frozen), Y = the trained MLP blocks {y_blocks or '—'} "
        f"and the head.",
        "",
    ]
    if base is not None:
        lines.append(
            f"Training X and Y together (the baseline) took {fmt_seconds(base['median_s'])} "
            f"per step (median), with a peak memory of {fmt_bytes(base['peak_memory_bytes'])}."
        )
    cases = _cases(setup)
    lines += [
        "",
        *case_table(
            cases,
            [
                ("mechanism", lambda r: code(r["mechanism"])),
                *columns(
                    "step time",
                    "time ratio",
                    "peak",
                    "peak ratio",
                    "gradients",
                    "verdict",
                    step_time="step time",
                    time_ratio="vs baseline [95% CI]",
                    peak_ratio="vs baseline peak",
                ),
            ],
        ),
        "",
    ]
    best_set = equivalent_set(cases)
    if best_set:
        best = best_set[0]
        lines.append(
            f"The cheapest valid way to freeze X was `{best['mechanism']}`: "
            f"{fmt_seconds(best['median_s'])} per step, {fmt_ratio(best['time_ratio'])} of "
            f"the baseline's time "
            f"{fmt_interval(best.get('time_ratio_ci_low'), best.get('time_ratio_ci_high'))}, "
            f"peak memory {fmt_bytes(best['peak_memory_bytes'])} "
            f"({fmt_ratio(best.get('peak_ratio'))} of the baseline's)"
            + _equivalents(best_set)
            + "."
        )
    elif validity_measured:
        lines.append("No mechanism was valid in this setup.")
    else:
        lines.append(f"Validity was {NOT_MEASURED}, so no mechanism is ranked.")
    oo, rg = _by_mechanism(cases, "optimizer_only"), _by_mechanism(cases, "requires_grad")
    if oo is not None and rg is not None and oo["status"] == rg["status"] == "ok":
        lines.append(
            f"Leaving X trainable and only out of AdamW (`optimizer_only`) took "
            f"{fmt_seconds(oo['median_s'])} per step, "
            f"{fmt_ratio(div(oo.get('time_ratio'), rg.get('time_ratio')))} the time of "
            f"freezing X with `requires_grad` ({fmt_seconds(rg['median_s'])}), and "
            f"{fmt_ratio(div(oo.get('peak_memory_bytes'), rg.get('peak_memory_bytes')))} "
            f"its peak memory; verdict {verdict_label(oo)}."
        )
    lines += trap_notes(cases)
    return lines
