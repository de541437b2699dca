"""The run report (``report.md``): assembled from the findings, the run header and the tables.

:func:`build_report` turns checked runs and their tidy table into a
:class:`~bench_lib.analysis.format.Rendered`: the markdown text and the figures it links (file
name -> ``Figure``). Nothing here touches the file system; :mod:`bench_lib.analysis.cli` writes
the results. The comparison report is :mod:`bench_lib.analysis.compare_report`'s.

Layout: title and the first screen of decisions (:func:`~bench_lib.analysis.glance.decisions`:
a decision table, the four questions in plain sentences, links to the evidence); the cheapest
valid set per family and pattern; the run, noise and foreign memory; then each finding's
section (:mod:`bench_lib.analysis.findings`, numbered in registry order, each opening with its
headline); the tables and figures per model family (:mod:`bench_lib.analysis.tables`); the
failed and skipped cases. Every number comes from the data: a finding whose cases were not run
says which are missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from .findings import Finding, facts, findings
from .format import NOT_MEASURED, Rendered, tidy_text
from .glance import cheapest_section, decisions
from .header import failures, header, noise
from .results import Run
from .tables import families

__all__ = ["build_report", "headings"]


def headings(found: Sequence[Finding]) -> dict[str, str]:
    """Each finding's section heading, numbered from its place in ``found`` (their ``order``):
    ``{"no_grad": "### 1. What `no_grad` does ..."}``."""
    return {finding.name: f"### {i}. {finding.title}" for i, finding in enumerate(found, 1)}


def _answers(
    frame: pd.DataFrame, runs: Sequence[Run]
) -> tuple[list[str], list[str], dict[str, Figure]]:
    """(the first screen and the family × pattern section, the findings' sections, their
    figures)."""
    f = facts(frame, runs)
    found = findings()
    titles = headings(found)
    lines = ["## Answers", ""]
    if not f.validity_measured and f.ok:
        lines += [
            f"Validity verdicts were {NOT_MEASURED} (the files predate them): no mechanism is "
            f"called valid or invalid below.",
            "",
        ]
    figures: dict[str, Figure] = {}
    for finding in found:
        lines += [titles[finding.name], "", finding.headline(f), "", *finding.detail(f), ""]
        figures.update(finding.figures(f))
    return [*decisions(f, titles), *cheapest_section(f)], lines, figures


def build_report(runs: Sequence[Run], frame: pd.DataFrame) -> Rendered:
    """The run report. ``frame`` is ``tidy(runs)``. Figures are returned by file name; the
    markdown links them by that name."""
    glance, answers, figures = _answers(frame, runs)
    names = ", ".join(f"`{r.path}`" for r in runs)
    lines = [
        "# freeze-bench report",
        "",
        f"Freezing layers in a training step, measured in {names}.",
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
        "Ratios are to the baseline (same model and sizes, nothing frozen), from the rounds "
        "in which each decision group's members were timed together; the interval is the "
        "Hodges-Lehmann 95% interval of the per-round ratios. "
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
