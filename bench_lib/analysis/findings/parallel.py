"""Freezing under data parallelism (DDP and FSDP): which mechanisms the set-ups accept, what
DDP's flags cost and save, the gradient bytes communicated, and FSDP's memory per rank.

These findings draw on the parallel cases only (:attr:`~bench_lib.analysis.findings.Facts.
parallel`); the single-process findings never see them. A parallel case's baseline is the same
model, sizes, set-up and world size with nothing frozen (same file): its ``comm_bytes`` and
memory are what the frozen case is divided by.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ...vocab import PARALLEL, PARALLEL_DDP
from ..format import (
    NOT_MEASURED,
    Row,
    code,
    div,
    fmt_bytes,
    fmt_pct,
    fmt_ratio,
    join,
    median,
    plural,
    table,
)
from ..results import BASELINE_KEY, is_missing, mechanism_order, order_names, pattern_order
from . import Facts, Finding, Needs, register

__all__ = ["CommBytes", "DdpFlags", "FsdpMemory", "ParallelVerdicts"]

#: The set-ups with no extra flag: DDP as built by default, FSDP2, FSDP1 as built by default.
NO_FLAGS = ("ddp", "fsdp", "fsdp1")
FSDP = ("fsdp", "fsdp1", "fsdp1_orig_params")
_PARALLEL = Needs(where={"parallel": PARALLEL[1:]}, columns=("verdict",), failed=True)


def _frozen(f: Facts) -> list[Row]:
    """The parallel cases that freeze something (not the baselines)."""
    return [r for r in f.parallel if r["mechanism"] != "none"]


def _setups(rows: list[Row]) -> list[str]:
    return order_names((r["parallel"] for r in rows), PARALLEL)


def _baselines(f: Facts) -> dict[tuple[Any, ...], Row]:
    """The measured parallel baselines by their setup key (same file, model, sizes, set-up and
    world size)."""
    out: dict[tuple[Any, ...], Row] = {}
    for r in f.parallel:
        if r["mechanism"] == "none" and r["status"] == "ok":
            out.setdefault(_key(r), r)
    return out


def _key(row: Row, *drop: str) -> tuple[Any, ...]:
    return tuple(
        None if is_missing(row.get(c)) else _hashable(row.get(c))
        for c in BASELINE_KEY
        if c not in drop
    )


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return tuple(value) if isinstance(value, list) else value


def _first_sentence(text: Any) -> str:
    return str(text).partition(". ")[0].rstrip(".")


def _refused(row: Row) -> bool:
    return row.get("verdict") == "error"


def _where(row: Row) -> str:
    """``mlp middle`` (model and pattern)."""
    return f"{row['model']} {row['pattern']}"


def _outcome(rows: list[Row]) -> str:
    """``✓ 2 of 3; ✗ graph_cut 1 (middle)``: the verdicts of a set-up's cases of one
    mechanism."""
    valid = [r for r in rows if r["validity"] == "valid"]
    parts = [f"✓ {len(valid)} of {len(rows)}"] if valid else [f"✓ 0 of {len(rows)}"]
    bad = Counter(
        str(r.get("verdict") if not is_missing(r.get("verdict")) else r["status"])
        for r in rows
        if r["validity"] != "valid"
    )
    for verdict, n in bad.items():
        patterns = pattern_order(
            str(r["pattern"]) for r in rows if (r.get("verdict") or r["status"]) == verdict
        )
        parts.append(f"✗ {verdict} {n} ({', '.join(patterns)})")
    return "; ".join(parts)


@register
class ParallelVerdicts(Finding):
    name = "parallel_verdicts"
    order = 100
    title = "Which mechanisms work under DDP and FSDP without extra flags"
    label = "Freezing under data parallelism"
    needs = _PARALLEL

    def rows(self, f: Facts) -> list[Row]:
        return _frozen(f)

    def summary(self, f: Facts) -> str:
        rows = self.rows(f)
        plain = [r for r in rows if r["parallel"] in NO_FLAGS]
        refused = [r for r in plain if _refused(r)]
        groups = Counter((r["parallel"], r["mechanism"]) for r in refused)
        totals = Counter((r["parallel"], r["mechanism"]) for r in plain)
        valid = sum(r["validity"] == "valid" for r in rows)
        text = f"{valid} of {plural(len(rows), 'parallel case')} valid"
        if groups:
            text += "; without extra flags the set-up refused " + join(
                [
                    f"{code(m)} under {code(s)} in {n} of {totals[(s, m)]}"
                    for (s, m), n in sorted(groups.items())
                ]
            )
            messages = sorted({_first_sentence(r.get("verdict_detail")) for r in refused})
            text += f" ({'; '.join(messages)})"
        elif plain:
            text += "; no set-up refused a mechanism without extra flags"
        return text + "."

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No case with a parallel set-up was measured in this run. Run with "
                "`--bench-parallel ddp,fsdp` (and `--bench-world N`) to answer this question."
            ]
        mechanisms = mechanism_order(r["mechanism"] for r in rows)
        lines = [
            "Verdicts per set-up and mechanism against a single-process reference on the global "
            "batch (✓ valid; ✗ the verdict, with its patterns; `error`: the set-up or the "
            "mechanism raised, with the library's own message below):",
            "",
        ]
        cells = []
        for setup in _setups(rows):
            line: list[Any] = [code(setup)]
            for mech in mechanisms:
                sub = [r for r in rows if r["parallel"] == setup and r["mechanism"] == mech]
                line.append(_outcome(sub) if sub else "—")
            cells.append(line)
        lines += table(["set-up", *(code(m) for m in mechanisms)], cells)
        refused = [r for r in rows if _refused(r)]
        if refused:
            lines += ["", "What the libraries said:", ""]
            said: dict[tuple[str, str], set[str]] = {}
            for r in refused:
                key = (r["parallel"], _first_sentence(r.get("verdict_detail")))
                said.setdefault(key, set()).add(f"{r['mechanism']} ({_where(r)})")
            for (setup, message), where in sorted(said.items()):
                lines.append(f"- {code(setup)}, {', '.join(sorted(where))}: {message}.")
        return lines


@register
class DdpFlags(Finding):
    name = "ddp_flags"
    order = 101
    title = "What DDP's `find_unused_parameters=True` and `static_graph=True` cost and save"
    label = "DDP's flags"
    needs = Needs(where={"parallel": PARALLEL_DDP[1:]}, columns=("verdict",), failed=True)

    def rows(self, f: Facts) -> list[Row]:
        return [r for r in f.parallel if r["parallel"] in PARALLEL_DDP[1:]]

    def _plain(self, f: Facts) -> dict[tuple[Any, ...], Row]:
        """DDP's own cases (no flag) by everything but the set-up."""
        return {_key(r, "parallel") + _what(r): r for r in f.parallel if r["parallel"] == "ddp"}

    def _flag(self, f: Facts, flag: str) -> dict[str, Any]:
        """The numbers of one flag: its baselines' step time against DDP's, the cases DDP
        refused that it ran (and their verdicts), their bytes against the baseline's."""
        plain = self._plain(f)
        rows = [r for r in f.parallel if r["parallel"] == flag]
        base_q = [
            div(r.get("median_s"), twin.get("median_s"))
            for r in rows
            if r["mechanism"] == "none"
            and (twin := plain.get(_key(r, "parallel") + _what(r))) is not None
        ]
        rescued = [
            r
            for r in rows
            if (twin := plain.get(_key(r, "parallel") + _what(r))) is not None
            and _refused(twin)
            and not _refused(r)
        ]
        bases = _baselines(f)
        sent = [div(r.get("comm_bytes"), bases.get(_key(r), {}).get("comm_bytes")) for r in rescued]
        return {"rows": rows, "base": [q for q in base_q if q == q], "rescued": rescued,
                "sent": [q for q in sent if q == q]}  # fmt: skip

    def _sentence(self, f: Facts, flag: str) -> str:
        n = self._flag(f, flag)
        if not n["rows"]:
            return f"{code(flag)} {NOT_MEASURED}"
        text = f"{code(flag)}: "
        text += (
            f"its baseline step took {fmt_ratio(median(n['base']))} DDP's (median over "
            f"{plural(len(n['base']), 'model')}, separate timed rounds)"
            if n["base"]
            else "no DDP baseline to compare its step time with"
        )
        rescued = n["rescued"]
        if rescued:
            verdicts = Counter(str(r.get("verdict") or r["status"]) for r in rescued)
            text += (
                f"; it ran {plural(len(rescued), 'case')} DDP refused ("
                + ", ".join(f"{v} {k}" for k, v in sorted(verdicts.items()))
                + ")"
            )
            if n["sent"]:
                text += (
                    f", all-reducing {fmt_pct(median(n['sent']))} of the baseline's gradient "
                    "bytes there"
                )
        else:
            text += "; it ran no case that DDP refused"
        return text

    def summary(self, f: Facts) -> str:
        flags = [
            flag for flag in PARALLEL_DDP[1:] if any(r["parallel"] == flag for r in f.parallel)
        ]
        return "; ".join(self._sentence(f, flag) for flag in flags) + "."

    def detail(self, f: Facts) -> list[str]:
        if not self.rows(f):
            return [
                "No case with `ddp_find_unused` or `ddp_static` was measured in this run. Run "
                "with `--bench-parallel ddp,ddp_find_unused,ddp_static`."
            ]
        lines = [
            "Each flag's cases beside DDP's own (no flag) on the same model, sizes, pattern and "
            "mechanism. The time ratio is to each set-up's own baseline (interleaved pairs); "
            "the baselines' step times are compared across separate timed rounds, so read small "
            "differences as noise.",
            "",
        ]
        for flag in PARALLEL_DDP[1:]:
            if any(r["parallel"] == flag for r in f.parallel):
                lines.append(f"- {self._sentence(f, flag)}.")
        plain = self._plain(f)
        cells = []
        for r in sorted(self.rows(f), key=lambda r: (r["parallel"], _where(r), r["mechanism"])):
            twin = plain.get(_key(r, "parallel") + _what(r))
            cells.append(
                [
                    code(r["parallel"]),
                    _where(r),
                    code(r["mechanism"]),
                    _verdict(r),
                    fmt_ratio(r.get("time_ratio")),
                    fmt_bytes(r.get("comm_bytes")),
                    _verdict(twin) if twin else "—",
                    fmt_ratio(twin.get("time_ratio")) if twin else "—",
                ]
            )
        lines += [
            "",
            *table(
                ["set-up", "case", "mechanism", "verdict", "time ratio", "bytes sent",
                 "DDP's verdict", "DDP's time ratio"],
                cells,
            ),
        ]  # fmt: skip
        return lines


def _what(row: Row) -> tuple[Any, ...]:
    """What is frozen and how (pattern, blocks, globs, mechanism, mode)."""
    return tuple(
        _hashable(row.get(c))
        for c in ("pattern", "frozen_blocks", "freeze_globs", "mechanism", "frozen_mode")
    )


def _verdict(row: Row) -> str:
    if row["validity"] == "valid":
        return "✓ ok"
    return f"✗ {row.get('verdict') or row['status']}"


@register
class CommBytes(Finding):
    name = "comm_bytes"
    order = 102
    title = "Gradient bytes communicated per step under each mechanism"
    label = "Gradient bytes communicated"
    needs = Needs(where={"parallel": PARALLEL[1:]}, columns=("comm_bytes",))

    def rows(self, f: Facts) -> list[Row]:
        return [r for r in _frozen(f) if r["status"] == "ok"]

    def _shares(self, f: Facts) -> dict[tuple[str, str], list[float]]:
        """Per (mechanism, set-up), each case's bytes over its baseline's."""
        bases = _baselines(f)
        out: dict[tuple[str, str], list[float]] = {}
        for r in self.rows(f):
            q = div(r.get("comm_bytes"), bases.get(_key(r), {}).get("comm_bytes"))
            if q == q:
                out.setdefault((str(r["mechanism"]), str(r["parallel"])), []).append(q)
        return out

    def summary(self, f: Facts) -> str:
        shares = self._shares(f)
        if not shares:
            return f"no parallel case with a measured baseline ({NOT_MEASURED})."
        setups = order_names({s for _, s in shares}, PARALLEL)
        parts = []
        for mech in mechanism_order(m for m, _ in shares):
            spans: dict[str, list[str]] = {}
            for setup in setups:
                if (mech, setup) in shares:
                    spans.setdefault(_span(shares[(mech, setup)]), []).append(code(setup))
            if len(spans) == 1 and len(next(iter(spans.values()))) == len(setups) > 1:
                parts.append(f"{code(mech)} {next(iter(spans))} under every set-up")
            else:
                parts.append(
                    f"{code(mech)} "
                    + ", ".join(f"{span} under {join(where)}" for span, where in spans.items())
                )
        text = "share of the baseline's gradient bytes a rank sent per step: " + "; ".join(parts)
        if any(m == "optimizer_only" for m, _ in shares):
            text += " (parameters that keep requires_grad are all-reduced, frozen or not)"
        return text + "."

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return ["No measured parallel case in this run."]
        bases = _baselines(f)
        lines = [
            "Payload bytes one rank passed to gradient collectives in one step (DDP's bucket "
            "all-reduces, FSDP's reduce-scatters: the unsharded gradient each rank sends in), "
            "against the baseline's (nothing frozen, same set-up):",
            "",
        ]
        cells = []
        for r in sorted(rows, key=lambda r: (PARALLEL.index(r["parallel"]), _where(r))):
            base = bases.get(_key(r), {})
            cells.append(
                [
                    code(r["parallel"]),
                    _where(r),
                    code(r["mechanism"]),
                    _verdict(r),
                    fmt_bytes(r.get("comm_bytes")),
                    fmt_pct(div(r.get("comm_bytes"), base.get("comm_bytes"))),
                    "—" if is_missing(r.get("ddp_buckets")) else int(r["ddp_buckets"]),
                ]
            )
        lines += table(
            ["set-up", "case", "mechanism", "verdict", "bytes sent", "of baseline", "DDP buckets"],
            cells,
        )
        if self._shares(f):
            lines += ["", "**So:** the " + self.summary(f)]
        return lines


def _span(qs: list[float]) -> str:
    low, high = min(qs), max(qs)
    return fmt_pct(low) if abs(high - low) < 0.005 else f"{fmt_pct(low)}–{fmt_pct(high)}"


@register
class FsdpMemory(Finding):
    name = "fsdp_memory"
    order = 103
    title = "FSDP memory per rank with frozen blocks"
    label = "FSDP memory per rank"
    needs = Needs(where={"parallel": FSDP}, columns=("peak_memory_bytes",))

    def rows(self, f: Facts) -> list[Row]:
        return [r for r in _frozen(f) if r["parallel"] in FSDP and r["status"] == "ok"]

    def summary(self, f: Facts) -> str:
        parts = []
        for setup in _setups(self.rows(f)):
            sub = [r for r in self.rows(f) if r["parallel"] == setup]
            peak = [
                q for r in sub if (q := _q(r, "peak_memory_bytes", "base_peak_memory_bytes")) == q
            ]
            grads = [q for r in sub if (q := _q(r, "grad_bytes", "base_grad_bytes")) == q]
            parts.append(
                f"{code(setup)}: busiest rank's peak {_ratios(peak)} of its baseline's, "
                f"gradients held {_ratios(grads)}"
            )
        return "; ".join(parts) + " (per rank, over the frozen cases)."

    def detail(self, f: Facts) -> list[str]:
        rows = self.rows(f)
        if not rows:
            return [
                "No measured FSDP case in this run (`--bench-parallel fsdp,fsdp1,"
                "fsdp1_orig_params`)."
            ]
        ddp = {_key(r, "parallel") + _what(r): r for r in f.parallel if r["parallel"] == "ddp"}
        cells = []
        for r in sorted(rows, key=lambda r: (PARALLEL.index(r["parallel"]), _where(r))):
            twin = ddp.get(_key(r, "parallel") + _what(r))
            ranks = r.get("rank_peak_memory_bytes")
            cells.append(
                [
                    code(r["parallel"]),
                    _where(r),
                    code(r["mechanism"]),
                    _verdict(r),
                    ", ".join(fmt_bytes(b) for b in ranks) if isinstance(ranks, list) else "—",
                    fmt_ratio(_q(r, "peak_memory_bytes", "base_peak_memory_bytes")),
                    fmt_ratio(_q(r, "grad_bytes", "base_grad_bytes")),
                    fmt_ratio(div(r.get("peak_memory_bytes"), twin.get("peak_memory_bytes")))
                    if twin and twin["status"] == "ok"
                    else "—",
                ]
            )
        return [
            "Peak memory of each rank (rank 0 first; every tensor the worker holds counts) and "
            "the gradients a rank holds after backward, against the same set-up's baseline, and "
            "the busiest rank against DDP's on the same case:",
            "",
            *table(
                ["set-up", "case", "mechanism", "verdict", "peak per rank", "peak vs baseline",
                 "gradients vs baseline", "peak vs DDP"],
                cells,
            ),
        ]  # fmt: skip


def _q(row: Row, num: str, den: str) -> float:
    """``row[num] / row[den]``, NaN where either is unknown."""
    return div(row.get(num), row.get(den))


def _ratios(qs: list[float]) -> str:
    if not qs:
        return NOT_MEASURED
    low, high = min(qs), max(qs)
    return fmt_ratio(low) if abs(high - low) < 0.005 else f"{fmt_ratio(low)}–{fmt_ratio(high)}"
