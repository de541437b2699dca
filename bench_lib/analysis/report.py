"""The run report (``report.md``): assembled from the findings, the run header and the tables.

:func:`build_report` turns checked runs and their tidy table into a
:class:`~bench_lib.analysis.format.Rendered`: the markdown text and the figures it links (file
name -> ``Figure``). Nothing here touches the file system; :mod:`bench_lib.analysis.cli` writes
the results. The comparison report is :mod:`bench_lib.analysis.compare_report`'s.

Layout: title, "At a glance" (every finding's headline and the family × pattern table of
:mod:`~bench_lib.analysis.glance`), the run, noise and foreign memory, then each finding's
detail section (:mod:`bench_lib.analysis.findings`, in registry order), the tables and figures
per model family, the failed and skipped cases. Every number comes from the data: a finding
whose cases were not run says which are missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from .families import families
from .findings import facts, findings
from .format import NOT_MEASURED, Rendered, tidy_text
from .glance import at_a_glance
from .header import failures, header, noise
from .results import Run

__all__ = ["build_report"]


def _answers(
    frame: pd.DataFrame, runs: Sequence[Run]
) -> tuple[list[str], list[str], dict[str, Figure]]:
    """(at a glance, the findings' sections, their figures)."""
    f = facts(frame, runs)
    found = findings()
    lines = ["## Answers", ""]
    if not f.validity_measured and f.ok:
        lines += [
            f"Validity verdicts were {NOT_MEASURED} (the files predate them): no mechanism is "
            f"called valid or invalid below.",
            "",
        ]
    figures: dict[str, Figure] = {}
    for finding in found:
        lines += [f"### {finding.title}", "", *finding.detail(f), ""]
        figures.update(finding.figures(f))
    return at_a_glance(f, found), lines, figures


def build_report(runs: Sequence[Run], frame: pd.DataFrame) -> Rendered:
    """The run report. ``frame`` is ``tidy(runs)``. Figures are returned by file name; the
    markdown links them by that name."""
    glance, answers, figures = _answers(frame, runs)
    names = ", ".join(f"`{r.path}`" for r in runs)
    lines = [
        "# freeze-bench report",
        "",
        f"What freezing layers costs and saves in a training step, from {names}.",
        "",
        *glance,
        *header(runs, frame),
    ]
    measured = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    skipped = sum(len(r.skipped) for r in runs)
    lines += [
        f"**Cases.** {len(measured)} measured, {len(failed)} failed, {skipped} skipped "
        f"(details at the end).",
        "",
        *noise(frame),
    ]
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
        *answers,
    ]
    family_lines, family_figures = families(frame)
    lines += [*family_lines, *failures(runs, frame)]
    return Rendered(tidy_text(lines), {**figures, **family_figures})
