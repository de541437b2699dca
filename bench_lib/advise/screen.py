"""The answer of ``advise``: rows from the run's JSON, the equivalent set, and the one screen.

Plain Python (no torch, no pandas): it reads pytest-benchmark's JSON as a dict.

The recommendation is the **equivalent set**: the valid mechanisms whose 95% intervals of the
time ratio overlap the fastest valid one's, ordered by peak memory, then FLOPs. A decision is
*resolved* when every measured mechanism's interval is at most :data:`RESOLVED_WIDTH` wide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..vocab import MECHANISMS, TRAP_MECHANISMS

__all__ = [
    "MAX_LINES",
    "RESOLVED_WIDTH",
    "Advice",
    "Row",
    "advise_rows",
    "equivalent_set",
    "markdown",
    "mib",
    "render",
    "rows_from_json",
    "verdict_words",
]

MAX_LINES = 30
#: An interval of the time ratio at most this wide (5% of the baseline) counts as resolved.
RESOLVED_WIDTH = 0.05
_WIDTH = 110

_VERDICTS = {
    "ok": "valid",
    "graph_cut": "INVALID: cuts the graph",
    "frozen_param_moved": "INVALID: frozen weights moved",
    "frozen_buffer_changed": "INVALID: frozen buffers changed",
    "grad_mismatch": "INVALID: gradients differ from the reference",
    "error": "FAILS: it raised",
}


@dataclass(frozen=True)
class Row:
    """One case of the run, as the screen reads it (``ms`` the median step time)."""

    mechanism: str
    case_id: str
    status: str = "ok"
    verdict: str | None = None
    detail: str = ""
    message: str = ""
    ms: float | None = None
    ratio: float | None = None
    lo: float | None = None
    hi: float | None = None
    peak: int | None = None
    flops: float | None = None
    pattern: str = "none"
    frozen_blocks: tuple[int, ...] = ()
    steps: int = 0
    threads: int | None = None
    skipped: str = ""
    #: The case's ratios to the other members of its decision group (by mechanism), and whether
    #: the group resolved (``None``: a file without them).
    pairs: Mapping[str, Any] | None = None
    group_resolved: bool | None = None
    is_valid: bool | None = None

    @property
    def valid(self) -> bool:
        ok = self.is_valid if self.is_valid is not None else self.verdict == "ok"
        return self.status == "ok" and bool(ok) and not self.skipped

    @property
    def interval(self) -> tuple[float, float]:
        r = self.ratio if self.ratio is not None else math.inf
        return (self.lo if self.lo is not None else r, self.hi if self.hi is not None else r)

    @property
    def resolved(self) -> bool:
        if self.group_resolved is not None:
            return self.group_resolved
        return self.lo is not None and self.hi is not None and self.hi - self.lo <= RESOLVED_WIDTH


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _steps(info: Mapping[str, Any]) -> int:
    """Model steps a case ran, about: warm-up and timed rounds, both sides of the ratio pairs,
    the phase pass and the validity check (reference and mechanism)."""
    keys = ("warmup_rounds", "rounds", "phase_reps")
    n = sum(int(info.get(k) or 0) for k in keys)
    return n + 2 * int(info.get("ratio_pairs") or 0) + 2 * int(info.get("verdict_steps") or 0)


def _row(entry: Mapping[str, Any]) -> Row:
    info = entry["extra_info"]
    stats = entry.get("stats") or {}
    median = stats.get("median")
    flops = None
    if info.get("flops_forward") is not None and info.get("flops_backward") is not None:
        flops = float(info["flops_forward"]) + float(info["flops_backward"])
    return Row(
        mechanism=str(info["mechanism"]),
        case_id=str(info["case_id"]),
        status=str(info.get("status") or "ok"),
        verdict=info.get("verdict"),
        detail=str(info.get("verdict_detail") or ""),
        message=str(info.get("status_message") or ""),
        ms=None if median is None else 1000 * float(median),
        ratio=info.get("time_ratio"),
        lo=info.get("time_ratio_ci_low"),
        hi=info.get("time_ratio_ci_high"),
        peak=info.get("peak_memory_bytes"),
        flops=flops,
        pattern=str(info.get("pattern")),
        frozen_blocks=tuple(info.get("frozen_blocks") or ()),
        steps=_steps(info),
        threads=info.get("threads"),
        pairs=info.get("pair_ratios"),
        group_resolved=info.get("resolved"),
        is_valid=info.get("valid"),
    )


def rows_from_json(data: Mapping[str, Any]) -> list[Row]:
    """Every case of a run (timed, failed before timing, skipped), baseline first."""
    entries = list(data.get("benchmarks") or [])
    extra = data.get("freeze_bench") or {}
    entries += [e for e in extra.get("failed") or [] if e.get("extra_info")]
    rows = [_row(e) for e in entries]
    for skip in extra.get("skipped") or []:
        case_id = str(skip["id"])
        mech = next((m for m in _MECH_ORDER if f"-{m}-" in f"{case_id}-"), "?")
        rows.append(Row(mech, case_id, status="skipped", skipped=str(skip["reason"])))
    return sorted(
        rows, key=lambda r: _MECH_ORDER.index(r.mechanism) if r.mechanism in _MECH_ORDER else 99
    )


#: The baseline, then the mechanisms people use on purpose (advise never runs a trap).
_MECH_ORDER = tuple(m for m in MECHANISMS if m not in TRAP_MECHANISMS)


def equivalent_set(rows: Sequence[Row]) -> list[Row]:
    """The valid (non-baseline) rows whose time-ratio interval overlaps the fastest valid
    row's, ordered by peak memory, then FLOPs; empty when none is valid."""
    valid = [r for r in rows if r.valid and r.mechanism != "none" and r.ratio is not None]
    if not valid:
        return []
    best = min(valid, key=lambda r: r.ratio if r.ratio is not None else math.inf)
    lo, hi = best.interval

    def equivalent(r: Row) -> bool:
        # The direct pair from the group's rounds where the run has it; else overlapping
        # intervals of the ratios to the baseline.
        pair = (r.pairs or {}).get(best.mechanism)
        if isinstance(pair, Mapping) and pair.get("class") in (
            "equivalent",
            "distinct",
            "unresolved",
        ):
            # Unresolved: the rounds could not tell them apart, so it stays in the set.
            return bool(pair["class"] != "distinct")
        return r.interval[0] <= hi and lo <= r.interval[1]

    same = [r for r in valid if r is best or equivalent(r)]
    return sorted(
        same,
        key=lambda r: (
            r.peak if r.peak is not None else math.inf,
            r.flops if r.flops is not None else math.inf,
        ),
    )


def verdict_words(row: Row) -> str:
    """The verdict in plain words, with why when it is not valid."""
    if row.skipped:
        return f"not run: {row.skipped}"
    if row.status != "ok" and row.verdict != "error":
        return f"FAILS ({row.status}): {row.message}"
    if row.mechanism == "none":
        return "trains everything (the baseline)"
    words = _VERDICTS.get(str(row.verdict), str(row.verdict))
    if row.verdict == "ok":
        return words
    why = (
        row.message.removeprefix("the mechanism raised: ") if row.verdict == "error" else row.detail
    )
    return f"{words} ({why})" if why else words


@dataclass
class Advice:
    """What the screen shows besides the rows: the model and how it was read (plain values
    from the probe) and where the outputs went."""

    model: str
    model_class: str
    params: int
    blocks: list[list[str]]
    block_params: list[int]
    stacks: list[str]
    how: str
    frozen: str
    frozen_params: int
    notes: list[str]
    inputs: str
    json_path: str
    report_path: str
    wall_s: float
    backward_map: str
    globs: list[str] = field(default_factory=list)
    sweep: str = ""


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def block_list(
    blocks: Sequence[Sequence[str]], params: Sequence[int], stacks: Sequence[str]
) -> str:
    """``0 bert.embeddings 23.8M; 1-12 bert.encoder.layer.0-11 7.1M each``: runs of a stack's
    layers of equal size merged."""
    parts: list[str] = []
    i = 0
    while i < len(blocks):
        names = list(blocks[i])
        parent = names[0].rpartition(".")[0] if len(names) == 1 else ""
        j = i
        while (
            j + 1 < len(blocks)
            and len(blocks[j + 1]) == 1
            and parent in stacks
            and blocks[j + 1][0].rpartition(".")[0] == parent
            and params[j + 1] == params[i]
        ):
            j += 1
        if j > i:
            first, last = names[0].rpartition(".")[2], blocks[j][0].rpartition(".")[2]
            parts.append(f"{i}-{j} {parent}.{first}-{last} {_count(params[i])} each")
        else:
            parts.append(f"{i} {'+'.join(names)} {_count(params[i])}")
        i = j + 1
    return "; ".join(parts)


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return ""
    if row.lo is None or row.hi is None:
        return f"{row.ratio:.2f}x"
    return f"{row.ratio:.2f}x [{row.lo:.2f}-{row.hi:.2f}]"


def advise_rows(rows: Sequence[Row]) -> list[str]:
    """One line per mechanism (the baseline first): step ms, ratio and interval, peak and its
    ratio, and the verdict in words."""
    base = next((r for r in rows if r.mechanism == "none" and not r.skipped), None)
    out = [f"  {'':16}{'step':>10}  {'time ratio [95%]':<20}{'peak':>12} {'ratio':>6}  verdict"]
    for r in rows:
        ms = "-" if r.ms is None else f"{r.ms:.1f} ms"
        peak_ratio = ""
        if base is not None and base.peak and r.peak is not None:
            peak_ratio = f"{r.peak / base.peak:.2f}x"
        line = f"  {r.mechanism:<16}{ms:>10}  {_ratio(r):<20}{mib(r.peak):>12} {peak_ratio:>6}  "
        out.append((line + verdict_words(r))[:_WIDTH])
    return out


def render(advice: Advice, rows: Sequence[Row], snippet_lines: Sequence[str]) -> list[str]:
    """The screen: :data:`MAX_LINES` lines or fewer."""
    a = advice
    base = next((r for r in rows if r.mechanism == "none" and not r.skipped), None)
    lines = [
        f"freeze-bench advise {a.model}: {a.model_class}, {_count(a.params)} parameters, "
        f"{len(a.blocks)} blocks",
        f"blocks: {a.how}"[: _WIDTH * 2],
        f"  {block_list(a.blocks, a.block_params, a.stacks)}"[: _WIDTH * 2],
        f"frozen: {a.frozen} ({_count(a.frozen_params)} parameters)",
        *(f"note: {n}" for n in a.notes),
        f"inputs: {a.inputs}",
        *advise_rows(rows),
    ]
    best = equivalent_set(rows)
    if not best:
        lines.append(
            "recommendation: none of the mechanisms is valid for this freeze; see why above"
        )
    else:
        names = ", ".join(r.mechanism for r in best)
        lines.append(
            f"recommendation: {names} (the valid mechanisms as fast as the fastest within the "
            "intervals; by peak memory, then FLOPs)"
        )
        top = best[0]
        if base is not None and base.ms is not None and top.ratio is not None:
            saved_ms = base.ms * (1 - top.ratio)
            saved_mib = (
                (base.peak - top.peak) / 2**20 if base.peak and top.peak is not None else None
            )
            mib_text = "" if saved_mib is None else f" and {saved_mib:.1f} MiB of peak memory"
            lines.append(
                f"  {top.mechanism} saves {saved_ms:.1f} ms per step ({1 - top.ratio:.0%})"
                f"{mib_text} against training everything"
            )
        lines += [f"    {s}" for s in snippet_lines]
    if a.sweep:
        lines.append(f"freeze sweep: {a.sweep}")
    lines.append(f"backward map: {a.backward_map}")
    lines.append(f"results: {a.json_path} (and its journal); report: {a.report_path}")
    measured = [r for r in rows if r.status == "ok" and not r.skipped]
    unresolved = [r.mechanism for r in measured if r.mechanism != "none" and not r.resolved]
    threads = {r.threads for r in measured if r.threads is not None}
    steps = sum(r.steps for r in rows)
    resolved = (
        "every decision resolved (intervals within the margin)"
        if not unresolved
        else f"not resolved: {', '.join(unresolved)} (wider than the margin at the cap)"
    )
    lines.append(
        f"took {a.wall_s:.0f} s, about {steps} model steps, "
        f"{'/'.join(str(t) for t in sorted(threads)) or '?'} threads; {resolved}"
    )
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines"
    return lines


def markdown(advice: Advice, rows: Sequence[Row], screen: Sequence[str]) -> str:
    """The short report: the screen, then the per-mechanism table."""
    out = [
        f"# freeze-bench advise: {advice.model}",
        "",
        "```",
        *screen,
        "```",
        "",
        "| mechanism | verdict | step ms | time ratio | 95% interval | peak MiB | FLOPs | case |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ci = "-" if r.lo is None or r.hi is None else f"{r.lo:.3f}-{r.hi:.3f}"
        out.append(
            f"| {r.mechanism} | {verdict_words(r).replace('|', '/')} | "
            f"{'-' if r.ms is None else f'{r.ms:.2f}'} | "
            f"{'-' if r.ratio is None else f'{r.ratio:.3f}'} | {ci} | "
            f"{'-' if r.peak is None else f'{r.peak / 2**20:.2f}'} | "
            f"{'-' if r.flops is None else f'{r.flops:.3g}'} | `{r.case_id}` |"
        )
    return "\n".join(out) + "\n"
