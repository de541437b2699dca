"""compare.py and compare_report.py: the Mann-Whitney U test against hand-computed values, run
alignment, and the comparison report's numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from report_parsing import section as _section
from report_parsing import tables as _tables

from bench_lib.analysis.compare import IdentityError, auto_ignored_axes, compare, mann_whitney_u
from bench_lib.analysis.compare_report import build_comparison
from bench_lib.analysis.results import load_run, tidy

FIXTURES = Path(__file__).parent / "fixtures"


def _frame(*names: str) -> pd.DataFrame:
    return tidy([load_run(str(FIXTURES / n)) for n in names])


# ---------------------------------------------------------------------------- Mann-Whitney U


def test_mann_whitney_separated_samples() -> None:
    # x = 1, 2, 3 takes ranks 1, 2, 3: R1 = 6, U1 = 6 - 3*4/2 = 0, U2 = 9.
    # mean = 9/2 = 4.5; var = 9/12 * 7 = 5.25 (no ties); z = (9 - 4.5 - 0.5) / sqrt(5.25)
    # = 4 / 2.2913 = 1.74574; p = 2 * (1 - Phi(1.74574)) = 2 * 0.040428 = 0.080856.
    # (scipy's exact distribution, its default for small samples without ties, gives 0.1: the
    # normal approximation is asked for explicitly.)
    r = mann_whitney_u([1, 2, 3], [4, 5, 6])
    assert r.u == 0
    assert r.z == pytest.approx(1.745743, abs=1e-6)
    assert r.p == pytest.approx(0.080856, abs=1e-6)


def test_mann_whitney_with_ties() -> None:
    # Pooled sorted: 1, 2, 2, 2, 3, 4 -> ranks 1, 3, 3, 3, 5, 6 (the three 2s share rank 3).
    # x = 1, 2, 2: R1 = 1 + 3 + 3 = 7, U1 = 7 - 6 = 1, U2 = 8. Tie group t = 3: t^3 - t = 24.
    # var = 9/12 * ((6 + 1) - 24 / (6 * 5)) = 0.75 * 6.2 = 4.65
    # z = (8 - 4.5 - 0.5) / sqrt(4.65) = 3 / 2.156386 = 1.391217
    # p = 2 * (1 - Phi(1.391217)) = 2 * 0.082080 = 0.164160.
    r = mann_whitney_u([1, 2, 2], [2, 3, 4])
    assert r.u == 1
    assert r.z == pytest.approx(1.391217, abs=1e-6)
    assert r.p == pytest.approx(0.164160, abs=1e-5)


def test_mann_whitney_eleven_rounds_each() -> None:
    # Completely separated 11 vs 11: U = 121, mean = 60.5, var = 121/12 * 23 = 231.9167,
    # z = (121 - 60.5 - 0.5) / 15.228811 = 3.939901; p = 2 * (1 - Phi(3.939901)) = 8.15e-5.
    r = mann_whitney_u(range(11), range(100, 111))
    assert r.z == pytest.approx(3.939901, abs=1e-6)
    assert r.p == pytest.approx(8.15e-5, rel=1e-2)
    assert r.p < 0.01


def test_mann_whitney_is_symmetric_and_bounded() -> None:
    x, y = [0.9, 1.1, 1.0, 1.3, 0.8], [1.2, 1.4, 1.0, 1.5, 1.25, 1.35]
    a, b = mann_whitney_u(x, y), mann_whitney_u(y, x)
    assert a.p == pytest.approx(b.p)
    assert a.u + b.u == len(x) * len(y)
    same = mann_whitney_u([2.0] * 5, [2.0] * 7)
    assert same.p == 1.0 and same.z == 0.0  # all equal: nothing to reject
    assert 0 <= mann_whitney_u([1, 2, 3], [1, 2, 3]).p <= 1


def test_mann_whitney_u_is_the_first_samples_statistic_with_ties_in_both() -> None:
    # Pooled sorted: 1, 1, 2, 3, 3, 3, 4 -> ranks 1.5, 1.5, 3, 5, 5, 5, 7.
    # x = 1, 3, 3: R1 = 1.5 + 5 + 5 = 11.5, U1 = 11.5 - 6 = 5.5; U2 = 12 - 5.5 = 6.5.
    # Ties: t = 2 and t = 3: (8 - 2) + (27 - 3) = 30; var = 12/12 * (8 - 30 / 42) = 7.285714
    # z = (6.5 - 6 - 0.5) / 2.699206 = 0; p = 1.
    r = mann_whitney_u([1, 3, 3], [1, 2, 3, 4])
    assert r.u == 5.5
    assert r.p == pytest.approx(1.0) and r.z == pytest.approx(0.0, abs=1e-9)


def test_mann_whitney_refuses_empty_samples() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        mann_whitney_u([], [1.0])


# ---------------------------------------------------------------------------- alignment


def test_before_after() -> None:
    comp = compare(_frame("cpu_run.json"), _frame("cpu_after.json"))
    counts = comp.counts()
    assert counts["faster"] == 1 and counts["slower"] == 1
    assert counts["newly invalid"] == 1 and counts["not tested"] == 1
    assert counts["unchanged"] == 21
    assert comp.ignored_axes == ()
    table = comp.table.set_index("case_id")
    slower = table.loc["mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32"]
    assert slower["change"] == "slower"
    assert slower["median_ratio"] == pytest.approx(1.30)
    assert slower["p_value"] < 0.01
    # 11 rounds each, completely separated (0.60 ms +-10% against 0.78 ms +-10%): U = 121 and
    # p = 8.15e-5, as in test_mann_whitney_eleven_rounds_each.
    assert slower["p_value"] == pytest.approx(8.15e-5, rel=1e-2)
    faster = table.loc["mlp-d4-w64-b16-middle-requires_grad-adamw-cpu-float32"]
    assert faster["change"] == "faster" and faster["median_ratio"] == pytest.approx(0.70)
    same = table.loc["mlp-d4-w64-b16-none-none-adamw-cpu-float32"]
    assert same["change"] == "unchanged" and same["p_value"] == 1.0
    moved = table.loc["mlp-d4-w64-b16-prefix-optimizer_only-adamw-cpu-float32"]
    assert moved["verdict_change"] == "newly invalid" and moved["new_verdict"] == "grad_mismatch"
    failed = table.loc["mlp-d4-w64-b16-middle-backward_inputs-adamw-cpu-float32"]
    assert failed["change"] == "not tested" and pd.isna(failed["p_value"])
    # Cases in one run only are kept, not dropped.
    assert list(comp.only_base["case_id"]) == [
        "mlp-d4-w64-b16-blocks0.2-requires_grad-adamw-cpu-float32"
    ]
    assert list(comp.only_new["case_id"]) == [
        "mlp-d4-w64-b16-suffix-requires_grad-adamw-cpu-float32"
    ]


def test_cpu_against_cuda_ignores_the_device_automatically() -> None:
    cpu, cuda = _frame("cpu_run.json"), _frame("cuda_run.json")
    assert auto_ignored_axes(cpu, cuda) == ("device",)
    comp = compare(cpu, cuda)
    assert comp.auto_ignored and comp.ignored_values == {"device": ("cpu", "cuda")}
    assert len(comp.table) == 25 and not len(comp.only_base) and not len(comp.only_new)
    measured = comp.table[comp.table["change"] != "not tested"]
    assert (measured["change"] == "faster").all()
    assert measured["median_ratio"].to_numpy() == pytest.approx([0.1] * len(measured))
    row = comp.table.set_index("case_id").loc["mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32"]
    assert row["new_case_id"] == "mlp-d4-w64-b16-prefix-no_grad-adamw-cuda-float32"


def test_full_identity_matches_nothing_across_devices() -> None:
    comp = compare(_frame("cpu_run.json"), _frame("cuda_run.json"), ignore=())
    assert len(comp.table) == 0
    assert len(comp.only_base) == 25 and len(comp.only_new) == 25


def test_bad_ignore_choices() -> None:
    cpu = _frame("cpu_run.json")
    with pytest.raises(ValueError, match="unknown axis 'colour'"):
        compare(cpu, cpu, ignore=["colour"])
    both = _frame("cpu_run.json", "cuda_run.json")
    with pytest.raises(IdentityError, match="same identity"):
        compare(both, cpu, ignore=["device"])


def test_a_significant_but_small_change_is_unchanged_below_min_change() -> None:
    base = _frame("cpu_run.json")
    case = base.index[0]
    # Tight rounds, then every round 3% slower: the test rejects equal distributions (the
    # samples do not even overlap), yet the change is below 5%.
    samples = [1e-3 * (1 + 0.0005 * i) for i in range(20)]
    base.at[case, "samples"] = samples
    base.at[case, "median_s"] = sorted(samples)[10]
    new = base.copy()
    new.at[case, "samples"] = [t * 1.03 for t in samples]
    new.at[case, "median_s"] = sorted(samples)[10] * 1.03
    default = compare(base, new).table.set_index("case_id")
    strict = compare(base, new, min_change=0.0).table.set_index("case_id")
    cid = base.at[case, "case_id"]
    assert strict.at[cid, "p_value"] < 0.01
    assert strict.at[cid, "change"] == "slower"
    assert default.at[cid, "change"] == "unchanged"
    # Every other case is identical in both runs: unchanged (or not tested: a failed one).
    assert set(default["change"]) == {"unchanged", "not tested"}


def test_time_ratio_change_is_judged_by_the_intervals_and_baselines_show_drift() -> None:
    base = _frame("cpu_run.json")
    new = base.copy()
    # The whole machine 30% slower in the new run: every median moves, no time ratio does.
    for i in new.index:
        if not pd.isna(new.at[i, "median_s"]):
            new.at[i, "median_s"] = float(new.at[i, "median_s"]) * 1.3
    frozen = new.index[(new["mechanism"] != "none") & new["time_ratio_ci_low"].notna()][0]
    lo, hi = (
        float(base.at[frozen, "time_ratio_ci_low"]),
        float(base.at[frozen, "time_ratio_ci_high"]),
    )
    # ... except one case whose ratio interval now lies wholly below the base one.
    new.at[frozen, "time_ratio_ci_low"] = lo - 0.3
    new.at[frozen, "time_ratio_ci_high"] = lo - 0.01
    comp = compare(base, new)
    assert comp.baseline_drift() and all(d == pytest.approx(1.3) for d in comp.baseline_drift())
    table = comp.table.set_index("case_id")
    assert table.at[base.at[frozen, "case_id"], "ratio_change"] == "lower"
    counts = comp.counts()
    assert counts["time ratio lower"] == 1 and counts["time ratio higher"] == 0
    assert counts["time ratio same"] + counts["time ratio no interval"] == len(table) - 1
    assert hi >= lo


# ---------------------------------------------------------------------------- the report


def test_comparison_report_numbers() -> None:
    base, new = (load_run(str(FIXTURES / n)) for n in ("cpu_run.json", "cpu_after.json"))
    fb, fn = tidy([base]), tidy([new])
    md = build_comparison(base, new, fb, fn, compare(fb, fn)).markdown
    summary = _section(md, "## Summary")
    assert (
        "Of 24 cases in both runs: 1 faster, 1 slower, 21 unchanged, 1 not tested, "
        "1 newly invalid. 1 only in the base run, 1 only in the new run." in summary
    )
    assert "Mann-Whitney U test" in md and "alpha = 0.01" in md
    significant = _tables(_section(md, "## Significant time changes"))[0]
    assert [(r["case"], r["new/base"], r["change"]) for r in significant] == [
        ("`mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32`", "1.30×", "slower"),
        ("`mlp-d4-w64-b16-middle-requires_grad-adamw-cpu-float32`", "0.70×", "faster"),
    ]
    verdicts = _tables(_section(md, "## Verdict changes"))[0]
    assert verdicts == [
        {
            "case": "`mlp-d4-w64-b16-prefix-optimizer_only-adamw-cpu-float32`",
            "change": "newly invalid",
            "base verdict": "✓ ok",
            "new verdict": "✗ grad_mismatch",
        }
    ]
    every = {r["case"]: r for r in _tables(_section(md, "## Every case in both runs"))[0]}
    row = every["`mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32`"]
    assert (row["base median"], row["new median"]) == ("600 µs", "780 µs")
    assert "`mlp-d4-w64-b16-blocks0.2-requires_grad-adamw-cpu-float32`" in _section(
        md, "## Only in the base run"
    )
    assert "`mlp-d4-w64-b16-suffix-requires_grad-adamw-cpu-float32`" in _section(
        md, "## Only in the new run"
    )


def test_comparison_across_devices_says_how_it_matched() -> None:
    base, new = (load_run(str(FIXTURES / n)) for n in ("cpu_run.json", "cuda_run.json"))
    fb, fn = tidy([base]), tidy([new])
    md = build_comparison(base, new, fb, fn, compare(fb, fn)).markdown
    assert "Of 25 cases in both runs: 24 faster" in md
    assert "without `device`, left out automatically" in md and "`device`: cpu → cuda" in md
    assert "a median of 0.10×" in md
