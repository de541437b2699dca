"""Markdown reports: the run report (``report.md``) and the comparison report (``compare.md``).

:func:`build_report` turns checked runs and their tidy table into a :class:`Rendered`: the
markdown text and the figures it links (file name -> ``Figure``). :func:`build_comparison`
does the same for a :class:`~bench_lib.compare.Comparison`. Nothing here touches the file
system; :mod:`bench_lib.analysis.cli` writes the results.

Every number in the text comes from the data: the answers to the four questions are built from
the rows that bear on each question, and a question without such rows says which cases are
missing. Values are stored in bytes and seconds and scaled here, when rendered.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .compare import MIN_SAMPLES, Comparison
from .results import (
    BASELINE_KEY,
    BYTE_UNITS,
    EN_DASH,
    NOISE_THRESHOLD,
    SECOND_UNITS,
    TIMES,
    Run,
    is_missing,
    mechanism_order,
    pattern_label_order,
    pattern_order,
    scale,
    setup_key,
)

__all__ = [
    "NOT_MEASURED",
    "QUESTIONS",
    "SETUP_COLUMNS",
    "VERDICT_MEANINGS",
    "Rendered",
    "build_comparison",
    "build_report",
    "fmt_bytes",
    "fmt_ratio",
    "fmt_seconds",
    "verdict_label",
]

NOT_MEASURED = "not measured in this run"
_OF_BASE = "of the baseline's"

#: What each verdict means, for readers of the report (the record's verdict_detail has the
#: numbers of each case).
VERDICT_MEANINGS: dict[str, str] = {
    "ok": "correct: trainable parameters get the reference gradients, frozen ones stay put",
    "graph_cut": "trainable parameters before the frozen blocks received no gradient",
    "frozen_param_moved": "a frozen parameter changed during the steps",
    "frozen_buffer_changed": "a buffer of a frozen block changed (BatchNorm statistics)",
    "grad_mismatch": "trainable gradients differ from the reference beyond the tolerance",
    "error": "the mechanism raised an exception",
}

#: The axes that make one "setup": the rows of one table and one set of figures (a baseline's
#: axes but the file and the depth, which the table's rows sweep).
SETUP_COLUMNS: tuple[str, ...] = tuple(a for a in BASELINE_KEY if a not in ("source", "depth"))

Row = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """A report: markdown text and the figures it links, by file name (relative to it)."""

    markdown: str
    figures: dict[str, Figure] = field(default_factory=dict)


# ---------------------------------------------------------------------------- formatting


def _num(value: float) -> str:
    """Three significant figures without exponent for values in [0.001, 10000)."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_bytes(value: Any) -> str:
    """``1536`` -> ``"1.50 KiB"``; null -> ``"—"``."""
    if is_missing(value):
        return "—"
    v, unit = scale(float(value), BYTE_UNITS)
    return f"{v:.0f} B" if unit == "B" else f"{_num(v)} {unit}"


def fmt_seconds(value: Any) -> str:
    """``0.00123`` -> ``"1.23 ms"``; null -> ``"—"``."""
    if is_missing(value):
        return "—"
    v, unit = scale(float(value), SECOND_UNITS)
    return f"{_num(v)} {unit}"


def fmt_ratio(value: Any) -> str:
    """``0.6234`` -> ``"0.62x"`` (with the multiplication sign); null -> ``"—"``."""
    return "—" if is_missing(value) or not math.isfinite(float(value)) else f"{value:.2f}{TIMES}"


def fmt_pct(value: Any) -> str:
    """``0.4567`` -> ``"46%"``; null -> ``"—"``."""
    return "—" if is_missing(value) else f"{100 * float(value):.0f}%"


def fmt_interval(low: Any, high: Any) -> str:
    if is_missing(low) or is_missing(high):
        return "no interval"
    return f"[{float(low):.2f}, {float(high):.2f}]"


def _ratio_ci(row: Row) -> str:
    if is_missing(row.get("time_ratio")):
        return "—"
    interval = fmt_interval(row.get("time_ratio_ci_low"), row.get("time_ratio_ci_high"))
    return f"{fmt_ratio(row['time_ratio'])} {interval}"


def verdict_label(row: Row) -> str:
    """``✓ ok``, ``✗ graph_cut``, ``failed: oom`` or ``not measured in this run``."""
    validity = row.get("validity")
    if validity == "failed":
        return f"failed: {row.get('status')}"
    verdict = row.get("verdict")
    if validity == "valid":
        return f"✓ {verdict}" if not is_missing(verdict) else "✓ valid"
    if validity == "invalid":
        return f"✗ {verdict}" if not is_missing(verdict) else "✗ invalid"
    return NOT_MEASURED


def _code(name: Any) -> str:
    return f"`{name}`"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _values(rows: Iterable[Row], column: str) -> list[float]:
    out = []
    for r in rows:
        v: Any = r.get(column)
        if not is_missing(v) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def _dist(values: Sequence[float], fmt: Callable[[Any], str], noun: str = "case") -> str:
    """``"a median of 0.62x (0.55x-0.70x over 4 cases)"``, or ``"0.62x (1 case)"``."""
    if not values:
        return NOT_MEASURED
    if len(values) == 1:
        return f"{fmt(values[0])} (1 {noun})"
    med = float(np.median(values))
    span = f"{fmt(min(values))}{EN_DASH}{fmt(max(values))}"
    return f"a median of {fmt(med)} ({span} over {len(values)} {noun}s)"


def _metric(
    label: str, values: Sequence[float], fmt: Callable[[Any], str], of: str = "", noun: str = "case"
) -> str:
    """``"step time a median of 0.62x (...) of the baseline's"``, or ``"step time not measured
    in this run"`` when there are no values (``of`` is left out then)."""
    if not values:
        return f"{label} {NOT_MEASURED}"
    return f"{label} {_dist(values, fmt, noun)}" + (f" {of}" if of else "")


def _records(frame: pd.DataFrame) -> list[Row]:
    return [{str(k): v for k, v in r.items()} for r in frame.to_dict("records")]


def _date(text: str | None) -> str:
    if not text:
        return "unknown"
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return text
    zone = d.tzname() or ""
    return d.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


# ---------------------------------------------------------------------------- setups


def _setup_columns(frame: pd.DataFrame) -> list[str]:
    """:data:`SETUP_COLUMNS`, plus the file when one case id appears in two files."""
    columns = list(SETUP_COLUMNS)
    if frame["source"].nunique() > 1 and frame.duplicated(subset=["case_id"]).any():
        columns.append("source_label")
    return columns


def _setups(frame: pd.DataFrame) -> list[tuple[tuple[Any, ...], list[Row]]]:
    """Rows grouped by setup, in the order they first appear."""
    columns = _setup_columns(frame)
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in _records(frame):
        groups.setdefault(setup_key(r, columns), []).append(r)
    return list(groups.items())


def _setup_title(row: Row, with_source: bool = False) -> str:
    parts = [("seed scenario: " if row.get("scenario") == "seed" else "") + str(row["model"])]
    parts += [f"width {row['width']}", f"batch {row['batch_size']}"]
    if not is_missing(row.get("seq_len")):
        parts.append(f"sequence {int(row['seq_len'])}")
    if not is_missing(row.get("image_size")):
        parts.append(f"image {int(row['image_size'])}{TIMES}{int(row['image_size'])}")
    parts += [str(row["optimizer"]), str(row["device"]), str(row["dtype"])]
    parts.append(_plural(int(row["threads"]), "thread"))
    if row.get("seed") not in (0, None):
        parts.append(f"seed {row['seed']}")
    if with_source:
        parts.append(str(row["source_label"]))
    return " · ".join(parts)


def _setup_slug(row: Row, with_source: bool = False) -> str:
    parts = [
        "seed" if row.get("scenario") == "seed" else "",
        str(row["model"]),
        f"w{row['width']}",
        f"b{row['batch_size']}",
    ]
    for key, prefix in (("seq_len", "s"), ("image_size", "i")):
        if not is_missing(row.get(key)):
            parts.append(f"{prefix}{int(row[key])}")
    parts += [str(row["optimizer"]), str(row["device"]), str(row["dtype"]), f"t{row['threads']}"]
    if row.get("seed") not in (0, None):
        parts.append(f"seed{row['seed']}")
    if with_source:
        parts.append(str(row["source_label"]))
    return _slug("-".join(p for p in parts if p))


def _blocks(row: Row) -> str:
    blocks: Any = row.get("frozen_blocks")
    if is_missing(blocks) or not len(blocks):
        return "—"
    return ", ".join(str(b) for b in blocks)


# ---------------------------------------------------------------------------- header


def _machine_rows(run: Run) -> list[tuple[str, str]]:
    m = run.machine_info

    def get(key: str) -> Any:
        return m.get(key)

    gpu = get("gpu_name")
    if gpu:
        count = get("gpu_count")
        mem = get("gpu_memory_bytes")
        gpu_text = f"{gpu}" + (f" {TIMES} {count}" if count and count != 1 else "")
        gpu_text += f" ({fmt_bytes(mem)})" if mem else ""
    else:
        gpu_text = "none"
    cuda = get("torch_cuda_version")
    cpu = get("cpu_model") or (m.get("cpu") or {}).get("brand_raw") or "unknown"
    cores = [
        f"{get('cpu_count_logical')} logical" if get("cpu_count_logical") else "",
        f"{get('cpu_count_physical')} physical" if get("cpu_count_physical") else "",
    ]
    cores_text = ", ".join(c for c in cores if c)
    threads = get("torch_threads")
    interop = get("torch_interop_threads")
    omp = get("omp_num_threads")
    threads_text = (
        f"{threads if threads is not None else '?'} intra-op, "
        f"{interop if interop is not None else '?'} inter-op; OMP_NUM_THREADS "
        f"{omp if omp else 'unset'}"
    )
    commit = run.commit_info
    commit_text = "unknown"
    if commit.get("id") and commit.get("id") != "unknown":
        commit_text = f"{commit['id']}"
        if commit.get("branch"):
            commit_text += f" ({commit['branch']})"
        if commit.get("dirty"):
            commit_text += ", uncommitted changes"
    return [
        ("date", _date(run.datetime)),
        ("torch", f"{get('torch_version') or 'unknown'} (CUDA {cuda or 'none'})"),
        ("GPU", gpu_text),
        ("CPU", f"{cpu}" + (f" ({cores_text})" if cores_text else "")),
        ("torch threads", threads_text),
        ("memory", fmt_bytes(get("memory_total_bytes"))),
        ("Python", f"{get('python_implementation') or ''} {get('python_version') or 'unknown'}"),
        (
            "OS",
            " ".join(str(get(k)) for k in ("system", "release", "machine") if get(k))
            + (f", host {get('node')}" if get("node") else ""),
        ),
        ("pytest-benchmark", run.version or "—"),
        ("freeze-bench commit", commit_text),
    ]


def _run_rows(run: Run, rows: list[Row]) -> list[tuple[str, str]]:
    measured = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    devices = sorted({str(r["device"]) for r in rows})
    methods = sorted(
        {str(r["memory_method"]) for r in measured if not is_missing(r.get("memory_method"))}
    )
    planned = run.freeze_bench.get("cases_planned")
    cases = f"{len(measured)} measured, {len(failed)} failed, {len(run.skipped)} skipped" + (
        f" (planned {planned})" if planned is not None else ""
    )
    out = [
        ("file", f"`{run.path}` ({run.format})"),
        ("profile", run.profile or "unknown"),
        ("devices", ", ".join(devices) or "none"),
        ("cases", cases),
        ("memory method", ", ".join(methods) or "—"),
    ]
    folded = run.freeze_bench.get("combinations_folded")
    if folded:
        why = run.freeze_bench.get("combinations_folded_why") or "they are the baseline"
        out.append(("folded into baselines", f"{folded} pattern × mechanism combinations ({why})"))
    resumed = run.freeze_bench.get("resumed")
    if resumed:
        out.append(("resumed", f"{resumed} cases carried over from the journal"))
    cuda_reason = run.freeze_bench.get("cuda_unavailable_reason")
    if cuda_reason:
        out.append(("CUDA", f"unavailable: {cuda_reason}"))
    return out + _machine_rows(run)


def _header(runs: Sequence[Run], frame: pd.DataFrame) -> list[str]:
    by_source = {s: _records(frame[frame["source"] == s]) for s in frame["source"].unique()}
    columns = [_run_rows(run, by_source.get(run.path, [])) for run in runs]
    labels = [name for name, _ in columns[0]]
    header = ["", *(f"run {i + 1}" for i in range(len(runs)))] if len(runs) > 1 else ["", "run"]
    lines = ["## The run" if len(runs) == 1 else "## The runs", ""]
    lines += _table(
        header, [[f"**{label}**", *(dict(c)[label] for c in columns)] for label in labels]
    )
    lines.append("")
    for run in runs:
        lines += [f"- `{run.path}`: {note}" for note in run.notes]
    return lines


def _noise(frame: pd.DataFrame) -> list[str]:
    ok = _records(frame[frame["status"] == "ok"])
    if not ok:
        return []
    noisy = [r for r in ok if r["noisy"]]
    no_ci = [
        r
        for r in noisy
        if is_missing(r.get("ratio_ci_width")) or math.isnan(float(r["ratio_ci_width"]))
    ]
    text = (
        f"**Noise.** {len(noisy)} of {len(ok)} measured cases have a wide time-ratio interval: "
        f"its 95% interval is wider than {NOISE_THRESHOLD:.0%} of the ratio "
        f"((high - low) / ratio > {NOISE_THRESHOLD:.2f})"
        f"{f', or it has none (too few pairs): {len(no_ci)} of them' if no_ci else ''}."
    )
    if noisy:
        shown = ", ".join(_code(r["case_id"]) for r in noisy[:8])
        text += f" Treat their ratios with care: {shown}" + (
            f" and {len(noisy) - 8} more." if len(noisy) > 8 else "."
        )
    lines = [text, ""]
    bases = [r for r in ok if r["mechanism"] == "none" and not is_missing(r.get("time_ratio"))]
    if bases:
        ratios = _values(bases, "time_ratio")
        lines += [
            f"**Noise floor.** Each baseline is also timed against an identical twin (A/A'): "
            f"those ratios ran from {fmt_ratio(min(ratios))} to {fmt_ratio(max(ratios))} over "
            f"{_plural(len(ratios), 'baseline')}; a ratio closer to 1 than that is noise.",
            "",
        ]
    return lines


# ---------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class _Facts:
    """The rows the answers draw on."""

    ok: list[Row]
    failed: list[Row]
    skipped: list[dict[str, str]]
    #: Columns that split the answers' bullets: ``device`` when the runs hold several devices,
    #: ``source_label`` when one case id appears in several files (two runs of one sweep).
    scope_columns: tuple[str, ...]

    def where(self, **axes: Any) -> list[Row]:
        return [r for r in self.ok if all(r.get(k) == v for k, v in axes.items())]

    def scope(self, row: Row) -> str:
        if not self.scope_columns:
            return ""
        return "[" + ", ".join(str(row[c]) for c in self.scope_columns) + "] "

    @property
    def validity_measured(self) -> bool:
        return any(r["validity"] in ("valid", "invalid") for r in self.ok)


def _pair_key(row: Row) -> tuple[Any, ...]:
    blocks: Any = row.get("frozen_blocks")
    return (
        row["source"],
        *setup_key(row, SETUP_COLUMNS),
        row["depth"],
        row["pattern"],
        tuple(blocks) if not is_missing(blocks) else (),
        row.get("frozen_mode"),
    )


def _pairs(rows_a: list[Row], rows_b: list[Row]) -> list[tuple[Row, Row]]:
    """Rows of ``rows_a`` with the row of ``rows_b`` measured on the same case."""
    index = {_pair_key(r): r for r in rows_b}
    return [(a, index[_pair_key(a)]) for a in rows_a if _pair_key(a) in index]


def _quotients(pairs: list[tuple[Row, Row]], column: str) -> list[float]:
    out = []
    for a, b in pairs:
        x: Any = a.get(column)
        y: Any = b.get(column)
        if not is_missing(x) and not is_missing(y) and float(y):
            out.append(float(x) / float(y))
    return out


def _validity_summary(rows: list[Row], patterns: bool = True) -> str:
    """``"valid in 2 of 4; ✗ graph_cut in 2 (middle, alternating)"`` (patterns named if
    ``patterns``)."""
    known = [r for r in rows if r["validity"] in ("valid", "invalid")]
    if not known:
        return f"validity {NOT_MEASURED}"
    valid = [r for r in known if r["validity"] == "valid"]
    text = f"valid in {len(valid)} of {len(rows)}"
    bad = Counter(str(r.get("verdict") or "invalid") for r in known if r["validity"] == "invalid")
    for verdict, n in bad.items():
        text += f"; ✗ {verdict} in {n}"
        if patterns:
            names = pattern_order(str(r["pattern"]) for r in known if r.get("verdict") == verdict)
            text += f" ({', '.join(names)})"
    unknown = len(rows) - len(known)
    if unknown:
        text += f"; {unknown} {NOT_MEASURED}"
    return text


def _example_detail(rows: list[Row]) -> str:
    for r in rows:
        if r["validity"] == "invalid" and not is_missing(r.get("verdict_detail")):
            return f" Example, {_code(r['case_id'])}: {r['verdict_detail']}."
    return ""


def _q1_no_grad(f: _Facts) -> list[str]:
    rows = f.where(mechanism="no_grad")
    if not rows:
        return [
            "No `no_grad` case was measured in this run. Run the sweep with "
            "`--bench-mechanism no_grad` (baselines come with it) to answer this question."
        ]
    lines = [
        f"`no_grad` was measured in {_plural(len(rows), 'case')}: "
        f"{_validity_summary(rows)}.{_example_detail(rows)}",
        "",
    ]
    for pattern in pattern_label_order(rows):
        for scope in sorted({f.scope(r) for r in rows}):
            sub = [r for r in rows if r["pattern_label"] == pattern and f.scope(r) == scope]
            if not sub:
                continue
            lines.append(
                f"- {scope}**{pattern}** ({_plural(len(sub), 'case')}, "
                f"{_validity_summary(sub, patterns=False)}): "
                f"{_metric('step time', _values(sub, 'time_ratio'), fmt_ratio, _OF_BASE)}; "
                f"{_metric('peak memory', _values(sub, 'peak_ratio'), fmt_ratio)}; "
                + _metric(
                    "activations saved for backward (the graph's memory)",
                    _values(sub, "saved_activation_ratio"),
                    fmt_pct,
                    _OF_BASE,
                )
                + f"; {_metric('backward FLOPs', _values(sub, 'flops_backward_ratio'), fmt_pct)}."
            )
    valid = [r for r in rows if r["validity"] == "valid"]
    pairs = _pairs(
        valid, [r for r in f.where(mechanism="requires_grad") if r["validity"] == "valid"]
    )
    if pairs:
        lines += [
            "",
            f"Against `requires_grad` on the same cases (both valid, "
            f"{_plural(len(pairs), 'pair')}): `no_grad`'s "
            + _metric(
                "time ratio was",
                _quotients(pairs, "time_ratio"),
                fmt_ratio,
                "of `requires_grad`'s",
                "pair",
            )
            + ", and its "
            + _metric("peak memory", _quotients(pairs, "peak_memory_bytes"), fmt_ratio, "", "pair")
            + ".",
        ]
    return lines


def _q2_optimizer_only(f: _Facts) -> list[str]:
    rows = f.where(mechanism="optimizer_only")
    if not rows:
        return [
            "No `optimizer_only` case was measured in this run (X left with requires_grad on, "
            "only Y in the optimizer). Run with `--bench-mechanism optimizer_only,requires_grad`."
        ]
    lines = [
        f"`optimizer_only` (X keeps requires_grad, only Y's parameters are in the optimizer) was "
        f"measured in {_plural(len(rows), 'case')}: {_validity_summary(rows)}."
        f"{_example_detail(rows)}"
    ]
    pairs = _pairs(rows, f.where(mechanism="requires_grad"))
    if not pairs:
        lines += ["", "No `requires_grad` case matches them, so the cost cannot be compared."]
        return lines
    rg = [b for _, b in pairs]
    lines += [
        "",
        f"- Correctness, on the same {_plural(len(pairs), 'case')}: `requires_grad` "
        f"{_validity_summary(rg)}; `optimizer_only` {_validity_summary([a for a, _ in pairs])}.",
        "- Time: "
        + _metric(
            "`optimizer_only`'s step took",
            _quotients(pairs, "time_ratio"),
            fmt_ratio,
            "the time of `requires_grad`'s (ratio of their time ratios to the same baseline)",
            "pair",
        )
        + ".",
        "- Memory, against `requires_grad`: "
        + "; ".join(
            _metric(label, _quotients(pairs, column), fmt_ratio, "", "pair")
            for label, column in (
                ("peak", "peak_memory_bytes"),
                ("gradients held", "grad_bytes"),
                ("optimizer state", "optimizer_state_bytes"),
            )
        )
        + ".",
        "- Work: "
        + _metric(
            "backward FLOPs",
            _quotients(pairs, "flops_backward"),
            fmt_ratio,
            "of `requires_grad`'s",
            "pair",
        )
        + ".",
        "",
    ]
    lines.append(_q2_conclusion(pairs))
    return lines


def _q2_conclusion(pairs: list[tuple[Row, Row]]) -> str:
    """The verdict of question 2 from (optimizer_only, requires_grad) pairs of one case each.

    Freezing X is *needed* where optimizer_only is invalid and requires_grad valid; where both
    are invalid, freezing X's parameters does not fix the case (e.g. BatchNorm statistics in
    train mode); where optimizer_only is valid, freezing X is a matter of cost only.
    """
    known = [(a, b) for a, b in pairs if a["validity"] in ("valid", "invalid")]
    if not known:
        return f"**So:** validity was {NOT_MEASURED}, so only the cost can be judged from it."
    needed = [a for a, b in known if a["validity"] == "invalid" and b["validity"] == "valid"]
    neither = [a for a, b in known if a["validity"] == "invalid" and b["validity"] != "valid"]
    enough = [(a, b) for a, b in known if a["validity"] == "valid"]
    parts = []
    if enough:
        time_q = _quotients(enough, "time_ratio")
        cost = float(np.median(time_q)) - 1 if time_q else math.nan
        how = (
            f"{abs(cost):.0%} {'more' if cost >= 0 else 'less'} step time than freezing it"
            if math.isfinite(cost)
            else f"a step time {NOT_MEASURED}"
        )
        parts.append(
            f"in {len(enough)} of {len(known)} cases leaving X out of the optimizer was enough "
            f"for correctness, so freezing X (`requires_grad`) is a matter of cost there: not "
            f"freezing it took a median {how}"
        )
    if needed:
        cases = ", ".join(f"{_code(r['case_id'])} (✗ {r.get('verdict')})" for r in needed)
        parts.append(
            f"in {len(needed)} of {len(known)} freezing X was needed for correctness: {cases}"
        )
    if neither:
        cases = ", ".join(f"{_code(r['case_id'])} (✗ {r.get('verdict')})" for r in neither)
        parts.append(
            f"in {len(neither)} of {len(known)} neither was correct, so freezing X's parameters "
            f"does not fix them: {cases}"
        )
    return "**So:** " + "; ".join(parts) + "."


def _q3_middle(f: _Facts) -> list[str]:
    rows = f.where(pattern="middle")
    if not rows:
        skipped = [s for s in f.skipped if "middle" in s["id"]]
        text = "No case with pattern `middle` was measured in this run."
        if skipped:
            text += (
                " Skipped: " + "; ".join(f"{_code(s['id'])} ({s['reason']})" for s in skipped) + "."
            )
        return [text + " Run with `--bench-pattern none,middle` at depth ≥ 3."]
    lines = [
        f"Pattern `middle` (frozen blocks with trainable blocks before and after them) was "
        f"measured in {_plural(len(rows), 'case')}. Per mechanism, against the baseline:",
        "",
    ]
    for mech in mechanism_order(r["mechanism"] for r in rows):
        for scope in sorted({f.scope(r) for r in rows}):
            sub = [r for r in rows if r["mechanism"] == mech and f.scope(r) == scope]
            if not sub:
                continue
            lines.append(
                f"- {scope}**{mech}** ({_validity_summary(sub, patterns=False)}): "
                + _metric("backward FLOPs", _values(sub, "flops_backward_ratio"), fmt_pct, _OF_BASE)
                + "; "
                f"{_metric('backward time', _values(sub, 'backward_ratio'), fmt_ratio)}; "
                f"{_metric('step time', _values(sub, 'time_ratio'), fmt_ratio)}."
                f"{_example_detail(sub)}"
            )
    cut = [r for r in rows if r.get("verdict") == "graph_cut"]
    rg = [r for r in rows if r["mechanism"] == "requires_grad" and r["validity"] == "valid"]
    skipped_cut = [1 - v for v in _values(cut, "flops_backward_ratio")]
    skipped_rg = [1 - v for v in _values(rg, "flops_backward_ratio")]
    lines.append("")
    cut_mechanisms = mechanism_order(r["mechanism"] for r in cut)
    if cut and skipped_cut:
        lines.append(
            f"The graph-cutting cases ({', '.join(_code(m) for m in cut_mechanisms)}) "
            f"skipped {_dist(skipped_cut, fmt_pct)} of the baseline's backward FLOPs: nothing "
            f"before the frozen blocks was back-propagated, so the trainable blocks there got "
            f"no gradient."
        )
    if rg and skipped_rg:
        lines.append(
            f"`requires_grad` skipped {_dist(skipped_rg, fmt_pct)} of the backward FLOPs: the "
            f"frozen blocks' weight gradients (dW), while the input gradient (dX) still flows "
            f"through them to the trainable blocks before."
        )
    if not (cut and skipped_cut) and not (rg and skipped_rg):
        lines.append(f"Backward FLOPs or verdicts were {NOT_MEASURED}.")
    return lines


def _q4_non_consecutive(f: _Facts) -> list[str]:
    lines: list[str] = []
    hints = {
        "alternating": "`--bench-pattern none,alternating`",
        "explicit": "`--bench-blocks 1,3` (any non-consecutive indices)",
    }
    for pattern in ("alternating", "explicit"):
        rows = f.where(pattern=pattern)
        if not rows:
            lines += [f"- **{pattern}**: no case in this run; run with {hints[pattern]}.", ""]
            continue
        where = sorted({(int(r["depth"]), _blocks(r)) for r in rows})
        blocks = "; ".join(f"blocks {b} of depth {d}" for d, b in where)
        lines.append(f"- **{pattern}** ({blocks}; {_plural(len(rows), 'case')}):")
        best: tuple[float, str] | None = None
        for mech in mechanism_order(r["mechanism"] for r in rows):
            sub = [r for r in rows if r["mechanism"] == mech]
            valid = [r for r in sub if r["validity"] == "valid"]
            lines.append(
                f"  - `{mech}`: {_validity_summary(sub, patterns=False)}; "
                f"{_metric('step time', _values(sub, 'time_ratio'), fmt_ratio)}, "
                f"{_metric('peak memory', _values(sub, 'peak_ratio'), fmt_ratio)} (to the "
                f"baseline's)."
            )
            times = _values(valid, "time_ratio")
            if valid and len(valid) == len(sub) and times:
                med = float(np.median(times))
                if best is None or med < best[0]:
                    best = (med, mech)
        if best is not None:
            lines.append(
                f"  - Cheapest mechanism valid in every `{pattern}` case: `{best[1]}`, a median "
                f"{fmt_ratio(best[0])} of the baseline's step time."
            )
        elif f.validity_measured:
            lines.append(f"  - No mechanism was valid in every `{pattern}` case.")
        lines.append("")
    return lines


def _seed(f: _Facts) -> list[str]:
    rows = [r for r in f.ok + f.failed if r.get("scenario") == "seed"]
    if not rows:
        return [
            "No seed-scenario case was measured in this run (run the `quick` or `default` "
            "profile, or `--bench-model xy`)."
        ]
    lines: list[str] = []
    frame = pd.DataFrame(rows)
    for _, setup in _setups(frame):
        first = setup[0]
        base = next((r for r in setup if r["mechanism"] == "none" and r["status"] == "ok"), None)
        frozen = sorted({_blocks(r) for r in setup if r["mechanism"] != "none"})
        depth = int(first["depth"])
        frozen_set = {int(b) for r in setup for b in (r.get("frozen_blocks") or [])}
        y_blocks = ", ".join(str(b) for b in range(depth) if b not in frozen_set)
        lines += [
            f"**{_setup_title(first)}**, depth {depth}: X = transformer encoder blocks "
            f"{'; '.join(frozen) or '—'} (frozen), Y = the trained MLP blocks {y_blocks or '—'} "
            f"and the head.",
            "",
        ]
        if base is not None:
            lines.append(
                f"Training X and Y together (the baseline) took {fmt_seconds(base['median_s'])} "
                f"per step (median), with a peak memory of {fmt_bytes(base['peak_memory_bytes'])}."
            )
        cases = [r for r in setup if r["mechanism"] != "none"]
        order = mechanism_order(r["mechanism"] for r in cases)
        cases.sort(key=lambda r: order.index(r["mechanism"]))
        lines += [
            "",
            *_table(
                [
                    "mechanism",
                    "step time",
                    "vs baseline [95% CI]",
                    "peak memory",
                    "vs baseline peak",
                    "gradients held",
                    "verdict",
                ],
                [
                    [
                        _code(r["mechanism"]),
                        fmt_seconds(r.get("median_s")),
                        _ratio_ci(r),
                        fmt_bytes(r.get("peak_memory_bytes")),
                        fmt_ratio(r.get("peak_ratio")),
                        fmt_bytes(r.get("grad_bytes")),
                        verdict_label(r),
                    ]
                    for r in cases
                ],
            ),
            "",
        ]
        valid = [
            r for r in cases if r["validity"] == "valid" and not is_missing(r.get("time_ratio"))
        ]
        if valid:
            best = min(valid, key=lambda r: float(r["time_ratio"]))
            lines.append(
                f"The cheapest valid way to freeze X was `{best['mechanism']}`: "
                f"{fmt_seconds(best['median_s'])} per step, {fmt_ratio(best['time_ratio'])} of "
                f"the baseline's time "
                f"{fmt_interval(best.get('time_ratio_ci_low'), best.get('time_ratio_ci_high'))}, "
                f"peak memory {fmt_bytes(best['peak_memory_bytes'])} "
                f"({fmt_ratio(best.get('peak_ratio'))} of the baseline's)."
                + _ties_text(best, valid)
            )
        elif f.validity_measured:
            lines.append("No mechanism was valid in this setup.")
        else:
            lines.append(f"Validity was {NOT_MEASURED}, so no mechanism is ranked.")
        oo = next((r for r in cases if r["mechanism"] == "optimizer_only"), None)
        rg = next((r for r in cases if r["mechanism"] == "requires_grad"), None)
        if oo is not None and rg is not None and oo["status"] == rg["status"] == "ok":
            lines.append(
                f"Leaving X trainable and only out of AdamW (`optimizer_only`) took "
                f"{fmt_seconds(oo['median_s'])} per step, "
                f"{fmt_ratio(_div(oo.get('time_ratio'), rg.get('time_ratio')))} the time of "
                f"freezing X with `requires_grad` ({fmt_seconds(rg['median_s'])}), and "
                f"{fmt_ratio(_div(oo.get('peak_memory_bytes'), rg.get('peak_memory_bytes')))} "
                f"its peak memory; verdict {verdict_label(oo)}."
            )
        lines.append("")
    return lines


def _div(a: Any, b: Any) -> float:
    if is_missing(a) or is_missing(b) or not float(b):
        return math.nan
    return float(a) / float(b)


#: The questions of the mission, in order: (heading, answer builder).
QUESTIONS: tuple[tuple[str, Callable[[_Facts], list[str]]], ...] = (
    ("1. What `no_grad` does to the graph, time and memory against the baseline", _q1_no_grad),
    (
        "2. Is freezing X needed when only Y is in the optimizer? (`optimizer_only` against "
        "`requires_grad`)",
        _q2_optimizer_only,
    ),
    ("3. Backprop with frozen blocks in the middle (pattern `middle`)", _q3_middle),
    (
        "4. Non-consecutive frozen layers (patterns `alternating` and `explicit`)",
        _q4_non_consecutive,
    ),
    ("The seed scenario: a frozen transformer encoder X feeding a trained MLP Y (AdamW)", _seed),
)


def _answers(frame: pd.DataFrame, runs: Sequence[Run]) -> list[str]:
    records = _records(frame)
    facts = _Facts(
        ok=[r for r in records if r["status"] == "ok"],
        failed=[r for r in records if r["status"] != "ok"],
        skipped=[s for run in runs for s in run.skipped],
        scope_columns=tuple(
            c
            for c in ("device", "source_label")
            if (c == "device" and len({r["device"] for r in records}) > 1)
            or (c == "source_label" and c in _setup_columns(frame))
        ),
    )
    lines = ["## Answers", ""]
    if not facts.validity_measured and facts.ok:
        lines += [
            f"Validity verdicts were {NOT_MEASURED} (the files predate them): no mechanism is "
            f"called valid or invalid below.",
            "",
        ]
    for title, build in QUESTIONS:
        lines += [f"### {title}", "", *build(facts), ""]
    return lines


# ---------------------------------------------------------------------------- tables


def _best_valid(cells: dict[str, Row]) -> str:
    """The fastest valid mechanism of one (depth, pattern) row, and those tied with it (their
    intervals overlap its own). Invalid and unmeasured ones are never candidates."""
    valid = {
        m: r
        for m, r in cells.items()
        if r["validity"] == "valid" and not is_missing(r.get("time_ratio"))
    }
    if not valid:
        known = any(r["validity"] in ("valid", "invalid") for r in cells.values())
        return "none valid" if known else f"— (validity {NOT_MEASURED})"
    best_m = min(valid, key=lambda m: float(valid[m]["time_ratio"]))
    best = valid[best_m]
    ties = _tied(best, list(valid.values()))
    text = f"{best_m} ({fmt_ratio(best['time_ratio'])})"
    return text + (f"; tied: {', '.join(ties)}" if ties else "")


def _tied(best: Row, valid: list[Row]) -> list[str]:
    """Mechanisms of ``valid`` (other than ``best``'s) whose interval reaches below the top of
    ``best``'s interval: the data cannot tell them from the winner."""
    high: Any = best.get("time_ratio_ci_high")
    if is_missing(high):
        return []
    return [
        str(r["mechanism"])
        for r in valid
        if r["mechanism"] != best["mechanism"]
        and not is_missing(r.get("time_ratio_ci_low"))
        and float(r["time_ratio_ci_low"]) <= float(high)
    ]


def _ties_text(best: Row, valid: list[Row]) -> str:
    ties = _tied(best, valid)
    if not ties:
        return ""
    return f" Within the noise of it (overlapping intervals): {', '.join(map(_code, ties))}."


def _overview_cell(row: Row | None) -> str:
    if row is None:
        return "—"
    if row["validity"] == "failed":
        return f"failed: {row['status']}"
    text = fmt_ratio(row.get("time_ratio"))
    if row["validity"] == "invalid":
        return f"✗ {text} {row.get('verdict') or 'invalid'}"
    return text


def _setup_tables(rows: list[Row]) -> list[str]:
    mechanisms = [m for m in mechanism_order(r["mechanism"] for r in rows) if m != "none"]
    keys: dict[tuple[Any, ...], dict[str, Row]] = {}
    for r in sorted(rows, key=lambda r: int(r["depth"])):
        if r["mechanism"] == "none":
            continue
        key = (int(r["depth"]), str(r["pattern_label"]), _blocks(r))
        keys.setdefault(key, {})[str(r["mechanism"])] = r
    labels = pattern_label_order(rows)
    ordered = sorted(keys, key=lambda k: (k[0], labels.index(k[1])))
    lines = ["Time ratio to the baseline per mechanism (✗: invalid, never ranked):", ""]
    lines += _table(
        ["depth", "pattern", "frozen blocks", *mechanisms, "best valid mechanism"],
        [
            [
                k[0],
                k[1],
                k[2],
                *(_overview_cell(keys[k].get(m)) for m in mechanisms),
                _best_valid(keys[k]),
            ]
            for k in ordered
        ],
    )
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
    lines += _table(
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
                _ratio_ci(r),
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


def _families(frame: pd.DataFrame) -> tuple[list[str], dict[str, Figure]]:
    lines = ["## Results by model family", ""]
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
    with_source = "source_label" in _setup_columns(frame)
    setups = _setups(frame)
    for model in sorted({str(rows[0]["model"]) for _, rows in setups}):
        lines += [f"### {model}", ""]
        for _, rows in [s for s in setups if s[1][0]["model"] == model]:
            first = rows[0]
            title = _setup_title(first, with_source)
            slug = _setup_slug(first, with_source)
            lines += [f"#### {title}", ""]
            ok = [r for r in rows if r["status"] == "ok"]
            lines += [*_setup_tables(rows), ""]
            if not ok:
                continue
            sub = pd.DataFrame(rows)
            # The depth with the most cases (the deepest of those): the fullest breakdown.
            per_depth = Counter(int(r["depth"]) for r in ok)
            depth = max(per_depth, key=lambda d: (per_depth[d], d))
            named = {
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
            for name, (fig, alt) in named.items():
                figures[name] = fig
                lines += [f"![{alt}]({name})", ""]
    return lines, figures


def _failures(runs: Sequence[Run], frame: pd.DataFrame) -> list[str]:
    failed = _records(frame[frame["status"] != "ok"])
    skipped = [(run, s) for run in runs for s in run.skipped]
    lines = ["## Failed and skipped cases", ""]
    if not failed and not skipped:
        return [*lines, "None: every planned case was measured.", ""]
    if failed:
        lines += [
            f"{_plural(len(failed), 'case')} failed (no timing; status and message from "
            f"the record):",
            "",
        ]
        lines += _table(
            ["case", "status", "message"],
            [[_code(r["case_id"]), r["status"], r.get("status_message") or "—"] for r in failed],
        )
        lines.append("")
    if skipped:
        reasons: dict[str, list[str]] = {}
        for _, s in skipped:
            reasons.setdefault(s["reason"], []).append(s["id"])
        lines += [f"{_plural(len(skipped), 'case')} skipped:", ""]
        for reason, ids in reasons.items():
            shown = ", ".join(_code(i) for i in ids[:6]) + (
                f" and {len(ids) - 6} more" if len(ids) > 6 else ""
            )
            lines.append(f"- {reason}: {_plural(len(ids), 'case')}: {shown}")
        lines.append("")
    return lines


def _flops_summary(measured: pd.DataFrame) -> list[str]:
    rows = [r for r in _records(measured) if r["mechanism"] != "none"]
    q = [
        float(r["time_ratio"]) / float(r["flops_ratio"])
        for r in rows
        if not is_missing(r.get("time_ratio"))
        and not is_missing(r.get("flops_ratio"))
        and float(r["flops_ratio"]) > 0
    ]
    if not q:
        return []
    above = sum(v > 1 + NOISE_THRESHOLD for v in q)
    below = sum(v < 1 - NOISE_THRESHOLD for v in q)
    return [
        f"Time ratio over FLOP ratio, per frozen case: {_dist(q, lambda v: f'{v:.2f}')}. "
        f"{above} of {len(q)} cases took more than {NOISE_THRESHOLD:.0%} more time than their "
        f"FLOPs predict, {below} more than {NOISE_THRESHOLD:.0%} less.",
        "",
    ]


def build_report(runs: Sequence[Run], frame: pd.DataFrame) -> Rendered:
    """The run report: header, answers, FLOP figure, per-family tables and figures, failures.

    ``frame`` is ``tidy(runs)``. Figures are returned by file name; the markdown links them by
    that name.
    """
    lines = ["# freeze-bench report", ""]
    names = ", ".join(f"`{r.path}`" for r in runs)
    lines += [f"What freezing layers costs and saves in a training step, from {names}.", ""]
    lines += _header(runs, frame)
    measured = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    skipped = sum(len(r.skipped) for r in runs)
    lines += [
        f"**Cases.** {len(measured)} measured, {len(failed)} failed, {skipped} skipped "
        f"(details at the end).",
        "",
    ]
    lines += _noise(frame)
    checked = frame["validity"].isin(["valid", "invalid"]).any()
    lines += [
        "Ratios are to the baseline (same model and sizes, nothing frozen), measured in "
        "interleaved baseline/case pairs; the interval is a distribution-free 95% interval of "
        "their median. "
        + (
            "✓ valid and ✗ invalid come from the validity check."
            if checked
            else f"Validity was {NOT_MEASURED}."
        ),
        "",
    ]
    lines += _answers(frame, runs)
    figures: dict[str, Figure] = {}
    if len(measured):
        lines += ["## Time against FLOPs", ""]
        has_flops = measured["flops_ratio"].notna().any()
        if has_flops:
            figures["time-vs-flops.png"] = plots.ratio_vs_flops(
                frame, "Measured time ratio against FLOP ratio (both to the baseline)"
            )
            lines += _flops_summary(measured)
            lines += [
                "Points on the dashed line y = x cost exactly their share of FLOPs; above it, a "
                "case spends time beyond its arithmetic (overheads, memory traffic).",
                "",
                "![Measured time ratio against FLOP ratio](time-vs-flops.png)",
                "",
            ]
        else:
            lines += [f"FLOPs were {NOT_MEASURED}.", ""]
    family_lines, family_figures = _families(frame)
    lines += family_lines
    figures.update(family_figures)
    lines += _failures(runs, frame)
    return Rendered(_tidy_text(lines), figures)


# ---------------------------------------------------------------------------- comparison


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
        f"Of {_plural(len(table), 'case')} in both runs: {', '.join(summary + extra)}. "
        f"{len(comp.only_base)} only in the base run, {len(comp.only_new)} only in the new run.",
        "",
    ]
    if len(table) and table["median_ratio"].notna().any():
        ratios = [float(v) for v in table["median_ratio"] if not is_missing(v)]
        lines += [
            f"New/base ratio of median step times: {_dist(ratios, fmt_ratio)} (below 1: new is "
            f"faster).",
            "",
        ]
    drift = comp.baseline_drift()
    if drift:
        moved = max(abs(d - 1.0) for d in drift)
        lines += [
            f"**Machine drift.** The baselines (nothing frozen) moved by {_dist(drift, fmt_ratio)} "
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
                _code(mech),
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
            *_table(
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
            f"{_join([_code(a) for a in comp.ignored_axes])}, "
            f"left out {how}: {values}. Labels are the base run's case ids.",
            "",
        ]
    else:
        lines += ["**Matching.** Cases are matched on their full identity (`case_id`).", ""]
    lines += ["## The runs", ""]
    cols = [_run_rows(base, _records(base_frame)), _run_rows(new, _records(new_frame))]
    labels = [k for k, _ in cols[0]]
    lines += [
        *_table(
            ["", "base", "new"], [[f"**{k}**", dict(cols[0])[k], dict(cols[1])[k]] for k in labels]
        ),
        "",
    ]
    lines += ["## Significant time changes", ""]
    significant = table[table["change"].isin(["faster", "slower"])] if len(table) else table
    if len(significant):
        significant = significant.sort_values("median_ratio", ascending=False)
        lines += _table(
            ["case", "base median", "new median", "new/base", "p-value", "change"],
            [
                [
                    _code(r["case_id"]),
                    fmt_seconds(r["base_median_s"]),
                    fmt_seconds(r["new_median_s"]),
                    fmt_ratio(r["median_ratio"]),
                    _p(r["p_value"]),
                    r["change"],
                ]
                for r in _records(significant)
            ],
        )
        lines.append("")
    else:
        lines += ["None.", ""]
    changed = table[table["verdict_change"] != ""] if len(table) else table
    lines += ["## Verdict changes", ""]
    if len(changed):
        lines += [
            *_table(
                ["case", "change", "base verdict", "new verdict"],
                [
                    [
                        _code(r["case_id"]),
                        r["verdict_change"],
                        _verdict_text(r, "base"),
                        _verdict_text(r, "new"),
                    ]
                    for r in _records(changed)
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
            *_table(
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
                        _code(r["case_id"]),
                        fmt_seconds(r["base_median_s"]),
                        fmt_seconds(r["new_median_s"]),
                        fmt_ratio(r["median_ratio"]),
                        _p(r["p_value"]),
                        r["change"],
                        f"{fmt_ratio(r['base_time_ratio'])} → {fmt_ratio(r['new_time_ratio'])}",
                        f"{_verdict_text(r, 'base')} → {_verdict_text(r, 'new')}",
                    ]
                    for r in _records(table)
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
            lines += [f"- `{r['case_id']}` ({verdict_label(r)})" for r in _records(frame)] + [""]
        else:
            lines += ["None.", ""]
    return Rendered(_tidy_text(lines), figures)


def _tidy_text(lines: list[str]) -> str:
    """The lines joined, with runs of blank lines collapsed to one and one final newline."""
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


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
