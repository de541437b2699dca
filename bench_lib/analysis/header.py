"""The parts of a report about the run itself: machine and library table, noise, foreign memory
and the failed and skipped cases."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from .. import precision
from .format import Row, code, date, fmt_bytes, fmt_ratio, plural, records, table, values
from .results import NOISE_THRESHOLD, TIMES, Run, is_baseline_row, is_missing

__all__ = [
    "FOREIGN_LIMIT_CPU",
    "FOREIGN_LIMIT_CUDA",
    "failures",
    "foreign_line",
    "foreign_memory",
    "header",
    "noise",
    "run_rows",
]

#: Bytes alive at the start of a memory pass that are not the workload's nor a library's
#: workspace (``foreign_bytes``) should be 0. On CPU the profiler's events see a little of the
#: interpreter's own allocations; on CUDA the allocator rounds blocks up to 2 MiB segments.
FOREIGN_LIMIT_CPU = 64 * 2**10
FOREIGN_LIMIT_CUDA = 2 * 2**20


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
        ("date", date(run.datetime)),
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


def run_rows(run: Run, rows: list[Row]) -> list[tuple[str, str]]:
    """(label, value) lines describing one run: file, profile, cases, machine, libraries."""
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


def header(runs: Sequence[Run], frame: pd.DataFrame) -> list[str]:
    """The "The run(s)" section: one column per run."""
    by_source = {s: records(frame[frame["source"] == s]) for s in frame["source"].unique()}
    columns = [run_rows(run, by_source.get(run.path, [])) for run in runs]
    labels = [name for name, _ in columns[0]]
    head = ["", *(f"run {i + 1}" for i in range(len(runs)))] if len(runs) > 1 else ["", "run"]
    lines = ["## The run" if len(runs) == 1 else "## The runs", ""]
    lines += table(head, [[f"**{label}**", *(dict(c)[label] for c in columns)] for label in labels])
    lines.append("")
    for run in runs:
        lines += [f"- `{run.path}`: {note}" for note in run.notes]
    return lines


def foreign_memory(rows: Iterable[Row]) -> list[Row]:
    """Measured cases whose memory pass started with foreign bytes alive beyond the noise of
    the method (:data:`FOREIGN_LIMIT_CPU`, :data:`FOREIGN_LIMIT_CUDA`). A null ``foreign_bytes``
    (a run before schema 2, or not measured) is never flagged."""
    out = []
    for r in rows:
        foreign: Any = r.get("foreign_bytes")
        if r.get("status") != "ok" or is_missing(foreign):
            continue
        cuda = r.get("memory_method") == "cuda_allocator" or (
            is_missing(r.get("memory_method")) and r.get("device") == "cuda"
        )
        if float(foreign) > (FOREIGN_LIMIT_CUDA if cuda else FOREIGN_LIMIT_CPU):
            out.append(r)
    return out


def foreign_line(rows: list[Row]) -> str | None:
    """``"3 cases had foreign memory alive (peak may be inflated): ..."``, or None."""
    flagged = foreign_memory(rows)
    if not flagged:
        return None
    shown = ", ".join(
        f"{code(r['case_id'])} ({fmt_bytes(r['foreign_bytes'])})" for r in flagged[:6]
    )
    more = f" and {len(flagged) - 6} more" if len(flagged) > 6 else ""
    return (
        f"{plural(len(flagged), 'case')} had foreign memory alive (peak may be inflated): "
        f"{shown}{more}."
    )


def precision_lines(rows: Sequence[Row]) -> list[str]:
    """The **Precision** paragraph: the decision groups resolved, by set-up, with what the
    unresolved ones would need (:mod:`bench_lib.precision`); nothing for a run without groups."""
    parts = precision.by_setup(rows)
    if not parts:
        return []
    total = sum(p.groups for p in parts)
    resolved = sum(p.resolved for p in parts)
    lines = [
        f"**Precision.** {resolved} of {total} decision groups resolved "
        f"({resolved / total:.0%}): every needed pair's interval at most the margin wide "
        f"before the group's time cap. Noise per value is the spread of one round's log ratio "
        f"that gives the width reached; the reachable margin is the width "
        f"{precision.SHARE:.0%} of the groups reached (where the budget and the margin clash, "
        f"the budget holds, and this is the margin to ask for).",
        "",
    ]
    lines += table(
        ["set-up", "resolved", "margin", "median width", "median rounds", "noise per value",
         "rounds to resolve (median)", "reachable margin"],
        [
            [p.setup, f"{p.resolved} of {p.groups} ({p.share:.0%})", f"{p.margin:.0%}",
             f"{p.median_width:.1%}", f"{p.rounds:.0f}", f"{p.noise:.1%}",
             f"{p.rounds_needed:.0f}", f"{p.reachable:.1%}"]
            for p in parts
        ],
    )  # fmt: skip
    return [*lines, ""]


def noise(frame: pd.DataFrame) -> list[str]:
    """Precision, noise, noise floor and foreign memory of the measured cases."""
    ok = records(frame[frame["status"] == "ok"])
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
        shown = ", ".join(code(r["case_id"]) for r in noisy[:8])
        text += f" Treat their ratios with care: {shown}" + (
            f" and {len(noisy) - 8} more." if len(noisy) > 8 else "."
        )
    lines = [*precision_lines(ok), text, ""]
    bases = [r for r in ok if is_baseline_row(r) and not is_missing(r.get("time_ratio"))]
    if bases:
        ratios = values(bases, "time_ratio")
        lines += [
            f"**Noise floor.** Each baseline is also timed against an identical twin (A/A'): "
            f"those ratios ran from {fmt_ratio(min(ratios))} to {fmt_ratio(max(ratios))} over "
            f"{plural(len(ratios), 'baseline')}; a ratio closer to 1 than that is noise.",
            "",
        ]
    measured = [r for r in ok if not is_missing(r.get("foreign_bytes"))]
    if measured:  # files before schema 2 lack the measurement: nothing to say then
        line = foreign_line(ok) or (
            f"None: every case with the measurement ({len(measured)}) started its memory pass "
            f"with at most {fmt_bytes(FOREIGN_LIMIT_CPU)} (CPU) or "
            f"{fmt_bytes(FOREIGN_LIMIT_CUDA)} (CUDA) alive besides its own."
        )
        lines += [f"**Foreign memory.** {line}", ""]
    return lines


def failures(runs: Sequence[Run], frame: pd.DataFrame) -> list[str]:
    """The "Failed and skipped cases" section."""
    failed = records(frame[frame["status"] != "ok"])
    skipped = [(run, s) for run in runs for s in run.skipped]
    lines = ["## Failed and skipped cases", ""]
    if not failed and not skipped:
        return [*lines, "None: every planned case was measured.", ""]
    if failed:
        lines += [
            f"{plural(len(failed), 'case')} failed (no timing; status and message from "
            f"the record):",
            "",
        ]
        lines += table(
            ["case", "status", "message"],
            [[code(r["case_id"]), r["status"], r.get("status_message") or "—"] for r in failed],
        )
        lines.append("")
    if skipped:
        reasons: dict[str, list[str]] = {}
        for _, s in skipped:
            reasons.setdefault(s["reason"], []).append(s["id"])
        lines += [f"{plural(len(skipped), 'case')} skipped:", ""]
        for reason, ids in reasons.items():
            shown = ", ".join(code(i) for i in ids[:6]) + (
                f" and {len(ids) - 6} more" if len(ids) > 6 else ""
            )
            lines.append(f"- {reason}: {plural(len(ids), 'case')}: {shown}")
        lines.append("")
    return lines
