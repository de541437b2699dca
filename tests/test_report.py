"""report.py: the numbers in the report's tables and sentences are the data's.

The truth is read from the fixture files with ``json`` directly (not through results.py), and
the report's markdown is parsed back; hand-computed values come from the numbers chosen in
tests/fixtures/make_fixtures.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import pytest
from matplotlib.figure import Figure
from report_parsing import section as _section
from report_parsing import tables as _tables

from bench_lib.analysis import plots
from bench_lib.analysis.report import build_report
from bench_lib.analysis.results import load_run, tidy

FIXTURES = Path(__file__).parent / "fixtures"
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "s": 1, "ms": 1e-3, "µs": 1e-6}


# ---------------------------------------------------------------------------- parsing helpers


def _truth(name: str) -> dict[str, dict[str, Any]]:
    """case_id -> record, plus ``median_s`` from the stats (None for failed cases)."""
    doc = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    out = {}
    for b in doc["benchmarks"]:
        out[b["extra_info"]["case_id"]] = {**b["extra_info"], "median_s": b["stats"]["median"]}
    for b in doc["freeze_bench"].get("failed", []):
        out[b["extra_info"]["case_id"]] = {**b["extra_info"], "median_s": None}
    return out


def _quantity(text: str) -> float:
    m = re.fullmatch(r"([\d.]+) (B|KiB|MiB|GiB|s|ms|µs)", text)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def _ratio(text: str) -> float:
    m = re.match(r"^([\d.]+)×", text)
    assert m, text
    return float(m.group(1))


def _close(shown: float, true: float, rel: float = 0.005) -> bool:
    """Equal at the three significant figures the report shows."""
    return abs(shown - true) <= rel * abs(true) + 1e-12


def _near(shown: float, true: float) -> bool:
    """Equal at the two decimals the report shows ratios with."""
    return abs(shown - true) <= 0.005 + 1e-9


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cpu_md() -> str:
    run = load_run(str(FIXTURES / "cpu_run.json"))
    return build_report([run], tidy([run])).markdown


# ---------------------------------------------------------------------------- the run header


def test_header_states_run_machine_and_cases(cpu_md: str) -> None:
    header = {r[""]: r["run"] for r in _tables(_section(cpu_md, "## The run"))[0]}
    assert header["**date**"] == "2026-11-27 18:13:37 UTC"
    assert header["**profile**"] == "quick"
    assert header["**devices**"] == "cpu"
    assert header["**cases**"] == "24 measured, 1 failed, 1 skipped (planned 25)"
    assert header["**torch**"] == "2.13.0+cpu (CUDA none)"
    assert header["**CPU**"] == "AMD EPYC 9B14 (2 logical, 2 physical)"
    assert header["**Python**"] == "CPython 3.11.7"
    assert header["**GPU**"] == "none"


def test_noise_summary_counts_wide_intervals(cpu_md: str) -> None:
    truth = _truth("cpu_run.json")
    ok = [r for r in truth.values() if r["status"] == "ok"]
    wide = [
        r
        for r in ok
        if r["time_ratio_ci_low"] is None
        or (r["time_ratio_ci_high"] - r["time_ratio_ci_low"]) / r["time_ratio"] > 0.10
    ]
    m = re.search(r"\*\*Noise\.\*\* (\d+) of (\d+) measured cases have a wide", cpu_md)
    assert m and (int(m.group(1)), int(m.group(2))) == (len(wide), len(ok))
    assert "wider than 10% of the ratio" in cpu_md
    assert "or it has none (too few pairs): 1 of them" in cpu_md


def test_failed_and_skipped_are_listed_with_reasons(cpu_md: str) -> None:
    part = _section(cpu_md, "## Failed and skipped cases")
    failed = _tables(part)[0]
    assert failed == [
        {
            "case": "`mlp-d4-w64-b16-middle-backward_inputs-adamw-cpu-float32`",
            "status": "error",
            "message": "RuntimeError: backward(inputs=...) got an empty list",
        }
    ]
    assert "pattern 'middle' needs depth >= 3" in part
    assert "`mlp-d2-w64-b16-adamw-cpu-float32-middle`" in part


# ---------------------------------------------------------------------------- tables


def test_every_case_table_matches_the_data(cpu_md: str) -> None:
    truth = _truth("cpu_run.json")
    by_key = {(r["depth"], r["pattern"], r["mechanism"], r["model"]): r for r in truth.values()}
    part = _section(cpu_md, "#### mlp · width 64 · batch 16 · adamw · cpu · float32 · 1 thread")
    detail = _tables(part)[1]
    assert len(detail) == len([r for r in truth.values() if r["model"] == "mlp"])
    for row in detail:
        pattern = row["pattern"].split(" [")[0]
        mech = "none" if row["mechanism"] == "baseline" else row["mechanism"]
        rec = by_key[(int(row["depth"]), pattern, mech, "mlp")]
        base = by_key[(rec["depth"], "none", "none", "mlp")]
        if rec["status"] != "ok":
            assert row["verdict"] == f"failed: {rec['status']}"
            assert row["step time (median)"] == "—"
            continue
        assert _close(_quantity(row["step time (median)"]), rec["median_s"])
        assert _close(_quantity(row["peak memory"]), rec["peak_memory_bytes"])
        assert _near(_ratio(row["time ratio [95% CI]"]), rec["time_ratio"])
        ci = re.search(r"\[([\d.]+), ([\d.]+)\]", row["time ratio [95% CI]"])
        if rec["time_ratio_ci_low"] is None:
            assert ci is None and "no interval" in row["time ratio [95% CI]"]
        else:
            assert ci is not None
            assert _near(float(ci.group(1)), rec["time_ratio_ci_low"])
            assert _near(float(ci.group(2)), rec["time_ratio_ci_high"])
        peak_ratio = rec["peak_memory_bytes"] / base["peak_memory_bytes"]
        assert _near(_ratio(row["peak vs baseline"]), peak_ratio)
        assert _near(_ratio(row["FLOP ratio"]), rec["flops_ratio"])
        mark = "✓" if rec["valid"] else "✗"
        assert row["verdict"] == f"{mark} {rec['verdict']}"


def test_overview_marks_invalid_and_never_ranks_them(cpu_md: str) -> None:
    truth = _truth("cpu_run.json")
    part = _section(cpu_md, "#### mlp · width 64 · batch 16 · adamw · cpu · float32 · 1 thread")
    overview = _tables(part)[0]
    for row in overview:
        pattern = row["pattern"].split(" [")[0]
        cases = [
            r
            for r in truth.values()
            if r["model"] == "mlp"
            and r["depth"] == int(row["depth"])
            and r["pattern"] == pattern
            and r["status"] == "ok"
        ]
        for r in cases:
            cell = row[r["mechanism"]]
            if r["valid"]:
                assert cell == f"{r['time_ratio']:.2f}×"
            else:
                assert cell == f"✗ {r['time_ratio']:.2f}× {r['verdict']}"
        valid = [r for r in cases if r["valid"]]
        best = min(valid, key=lambda r: r["time_ratio"])
        # The fastest valid mechanism is always in the set; no invalid one ever is.
        members = row["cheapest valid set"].split(" (")[0].split(" = ")
        assert best["mechanism"] in members
        assert not {r["mechanism"] for r in cases if not r["valid"]} & set(members)
    middle = next(r for r in overview if r["depth"] == "4" and r["pattern"] == "middle")
    # no_grad (0.70x) and inference_mode (0.69x) are faster but cut the graph.
    assert middle["no_grad"] == "✗ 0.70× graph_cut"
    assert middle["cheapest valid set"] == "requires_grad (0.88×)"
    assert middle["backward_inputs"] == "failed: error"


def test_invalid_cases_explained(cpu_md: str) -> None:
    assert "- ✗ `graph_cut`: trainable parameters before the frozen blocks" in cpu_md
    assert "`grad_mismatch`" not in cpu_md  # only the verdicts of this run are explained
    assert (
        "- ✗ `mlp-d4-w64-b16-alternating-zeroed_grad_in_optimizer-adamw-cpu-float32` "
        "(frozen_param_moved): 2 of 2 frozen parameter tensors" in cpu_md
    )


# ---------------------------------------------------------------------------- answers


def _bullet(md: str, start: str) -> str:
    line = next(x for x in md.splitlines() if x.startswith(start))
    return line


def test_q1_no_grad_numbers(cpu_md: str) -> None:
    part = _section(
        cpu_md, "### 1. What `no_grad` does to the graph, time and memory against the baseline"
    )
    # no_grad cases: prefix (mlp d4 0.62, mlp d8 0.56, seed 0.43) valid; middle, alternating and
    # explicit cut the graph.
    assert (
        "`no_grad` was measured in 6 cases: valid in 3 of 6; ✗ graph_cut in 3 (middle, "
        "alternating, explicit)." in part
    )
    prefix = _bullet(part, "- **prefix**")
    assert "step time a median of 0.56× (0.43×–0.62× over 3 cases) of the baseline's" in prefix
    # peaks: 300k/400k = 0.75, 560k/800k = 0.70, 500k/1.2M = 0.4167
    assert "peak memory a median of 0.70× (0.42×–0.75× over 3 cases)" in prefix
    # saved activations: 8k/20k = 40%, 16k/40k = 40%, 90k/300k = 30%
    assert "a median of 40% (30%–40% over 3 cases) of the baseline's" in prefix
    middle = _bullet(part, "- **middle**")
    assert "✗ graph_cut in 1" in middle and "step time 0.70× (1 case)" in middle
    # Against requires_grad on the same cases: 0.62/0.64, 0.56/0.58, 0.43/0.47 -> 0.9655 median
    assert "time ratio was a median of 0.97× (0.91×–0.97× over 3 pairs)" in part


def test_q2_optimizer_only_numbers(cpu_md: str) -> None:
    part = _section(
        cpu_md,
        "### 2. Is freezing X needed when only Y is in the optimizer? "
        "(`optimizer_only` against `requires_grad`)",
    )
    # time ratios optimizer_only / requires_grad: 0.95/0.64 = 1.484, 0.99/0.88 = 1.125,
    # 0.97/0.80 = 1.2125, 0.79/0.47 = 1.681 -> median (1.2125 + 1.484) / 2 = 1.348
    assert "step took a median of 1.35× (1.12×–1.68× over 4 pairs) the time of" in part
    assert "`requires_grad` valid in 4 of 4; `optimizer_only` valid in 4 of 4" in part
    assert "in 4 of 4 cases leaving X out of the optimizer was enough for correctness" in part
    assert "took a median 35% more step time than freezing it" in part


def test_q3_middle_numbers(cpu_md: str) -> None:
    part = _section(cpu_md, "### 3. Backprop with frozen blocks in the middle (pattern `middle`)")
    rg = _bullet(part, "- **requires_grad**")
    # backward FLOPs 1.7M/2M = 85% (d4), 3.3M/4M = 82.5% (d8) -> median 83.75%
    assert "backward FLOPs a median of 84% (82%–85% over 2 cases) of the baseline's" in rg
    # backward time 0.43/0.5 = 0.86, 0.85/1.0 = 0.85
    assert "backward time a median of 0.85× (0.85×–0.86× over 2 cases)" in rg
    no_grad = _bullet(part, "- **no_grad**")
    assert "valid in 0 of 1; ✗ graph_cut in 1" in no_grad
    assert "received no gradient" in no_grad
    assert "`requires_grad` skipped a median of 16% (15%–18% over 2 cases)" in part
    assert "(`no_grad`, `inference_mode`) skipped 40% (1 case)" not in part
    assert "skipped a median of 40% (40%–40% over 2 cases) of the baseline's backward" in part


def test_q4_non_consecutive_numbers(cpu_md: str) -> None:
    part = _section(
        cpu_md, "### 4. Non-consecutive frozen layers (patterns `alternating` and `explicit`)"
    )
    assert "- **alternating** (blocks 1, 3 of depth 4; 4 cases):" in part
    assert "  - `zeroed_grad_in_optimizer`: valid in 0 of 1; ✗ frozen_param_moved in 1" in part
    assert "Cheapest valid set for `alternating`: `requires_grad`, a median 0.80×" in part
    assert "- **explicit** (blocks 0, 2 of depth 4; 2 cases):" in part
    assert "Cheapest valid set for `explicit`: `requires_grad`, a median 0.83×" in part


def test_seed_scenario_numbers(cpu_md: str) -> None:
    truth = _truth("cpu_run.json")
    part = _section(
        cpu_md,
        "### 5. The seed scenario: a frozen transformer encoder X feeding a trained MLP Y (AdamW)",
    )
    base = truth["seed-xy-d4-w32-b4-none-none-adamw-cpu-float32"]
    assert f"took {base['median_s'] * 1e3:.2f} ms per step (median)" in part
    assert "with a peak memory of 1.14 MiB" in part  # 1,200,000 B
    rows = {r["mechanism"].strip("`"): r for r in _tables(part)[0]}
    assert list(rows) == ["no_grad", "requires_grad", "optimizer_only"]
    for mech, row in rows.items():
        rec = truth[f"seed-xy-d4-w32-b4-prefix-{mech}-adamw-cpu-float32"]
        assert _close(_quantity(row["step time"]), rec["median_s"])
        lo, hi = rec["time_ratio_ci_low"], rec["time_ratio_ci_high"]
        assert row["vs baseline [95% CI]"] == f"{rec['time_ratio']:.2f}× [{lo:.2f}, {hi:.2f}]"
        assert _close(_quantity(row["peak memory"]), rec["peak_memory_bytes"])
        assert _close(_quantity(row["gradients held"]), rec["grad_bytes"])
    assert "The cheapest valid way to freeze X was `no_grad`: 1.03 ms per step, 0.43×" in part
    # optimizer_only / requires_grad: 0.79 / 0.47 = 1.68; peaks 1.15M / 520k = 2.21
    assert "1.68× the time of freezing X with `requires_grad` (1.13 ms), and 2.21×" in part


def test_flops_summary(cpu_md: str) -> None:
    assert "![Measured time ratio against FLOP ratio](time-vs-flops.png)" in cpu_md
    assert re.search(r"Time ratio over FLOP ratio, per frozen case: a median of [\d.]+", cpu_md)


# ---------------------------------------------------------------------------- missing data


def test_older_file_says_not_measured() -> None:
    run = load_run(str(FIXTURES / "old_schema.json"))
    md = build_report([run], tidy([run])).markdown
    assert "Validity verdicts were not measured in this run" in md
    assert "FLOPs were not measured in this run." in md
    assert "✓" not in md and "✗ graph_cut" not in md
    assert "— (validity not measured in this run)" in md


def test_missing_questions_name_the_missing_cases() -> None:
    run = load_run(str(FIXTURES / "cpu_run.json.journal.jsonl"))
    md = build_report([run], tidy([run])).markdown
    assert "No case with pattern `middle` was measured in this run." in md
    assert "Skipped: `mlp-d2-w64-b16-adamw-cpu-float32-middle`" in md
    assert "- **alternating**: no case in this run" in md
    assert "- **explicit**: no case in this run; run with `--bench-blocks 1,3`" in md
    assert "No seed-scenario case was measured in this run" in md


def test_two_devices_keep_their_numbers_apart() -> None:
    runs = [load_run(str(FIXTURES / n)) for n in ("cpu_run.json", "cuda_run.json")]
    md = build_report(runs, tidy(runs)).markdown
    assert "- [cpu] **prefix**" in md and "- [cuda] **prefix**" in md
    assert "#### mlp · width 64 · batch 16 · adamw · cuda · float32 · 1 thread" in md
    header = _tables(_section(md, "## The runs"))[0]
    gpu = next(r for r in header if r[""] == "**GPU**")
    assert gpu["run 1"] == "none" and gpu["run 2"].startswith("NVIDIA H100 80GB HBM3")


# ---------------------------------------------------------------------------- figures


def test_figures_are_linked_labelled_and_render() -> None:
    run = load_run(str(FIXTURES / "cpu_run.json"))
    rendered = build_report([run], tidy([run]))
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rendered.markdown)
    assert sorted(links) == sorted(rendered.figures)
    assert any(n.endswith("-time-memory.png") for n in links)
    assert any(n.endswith("-time-ratio.png") for n in links)
    assert any("-memory-d" in n for n in links)
    for name, fig in rendered.figures.items():
        assert isinstance(fig, Figure)
        assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes), name
        assert any(ax.get_xlabel() for ax in fig.axes), name
        assert any(ax.get_ylabel() for ax in fig.axes), name
    png = plots.png_bytes(rendered.figures["time-vs-flops.png"])
    assert png.startswith(b"\x89PNG")


def test_time_vs_flops_keeps_its_y_label_inside_the_figure() -> None:
    """The y label used to be drawn partly outside the image, under the tick labels: the
    first render of a fixed-aspect axes under constrained layout. Nothing dark may touch the
    left edge of the PNG."""
    run = load_run(str(FIXTURES / "cpu_run.json"))
    fig = plots.ratio_vs_flops(
        tidy([run]), "Measured time ratio against FLOP ratio (both to the baseline)"
    )
    pixels = mpimg.imread(io.BytesIO(plots.png_bytes(fig)))[..., :3]
    dark = pixels.min(axis=2) < 0.5
    assert not dark[:, :3].any()
    assert dark[:, 3:40].any()  # the label and the tick labels are there, just inside


# ---------------------------------------------------------------------------- backward maps


def _flow(rec: dict[str, Any]) -> list[str] | None:
    """What backward does to each block of ``rec``'s case, as the validity check would record
    it (``block_flow``): the flow an eager step of the mechanism produces, ✗ codes where the
    fixture's verdict says the mechanism went wrong. None where the check did not run."""
    if rec["status"] != "ok":
        return None
    frozen = set(rec.get("frozen_blocks") or [])
    mech = rec["mechanism"]
    cut = mech in ("no_grad", "inference_mode")  # frozen blocks run outside autograd
    last_cut = max(frozen) if cut and frozen else -1
    out = []
    for b in range(rec["depth"]):
        # A gradient reaches block b's input when a trainable block before it is live.
        live = any(c not in frozen and c > last_cut for c in range(b))
        if b in frozen:
            if cut:
                out.append("none")
            elif mech == "zeroed_grad_in_optimizer":
                out.append("moved")
            elif mech == "optimizer_only":
                out.append("wx" if live else "w")  # still requires grad, just not stepped
            else:
                out.append("x" if live else "none")
        elif b < last_cut:
            out.append("starved")  # trainable, but its output fed a graph cut
        else:
            out.append("wx" if live else "w")
    return out


@pytest.fixture(scope="module")
def flow_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any]]:
    """The cpu fixture with ``block_flow`` injected into every record, plus a decoy outside
    the eager float32 set-up (a compiled copy of a case, all of it 'moved') that no map may
    show. Returns the rendered report and the fixture's records by case id."""
    doc = json.loads((FIXTURES / "cpu_run.json").read_text(encoding="utf-8"))
    for b in [*doc["benchmarks"], *doc["freeze_bench"]["failed"]]:
        b["extra_info"]["block_flow"] = _flow(b["extra_info"])
    src = next(
        b
        for b in doc["benchmarks"]
        if b["extra_info"]["case_id"].startswith("mlp-d4-w64-b16-middle-no_grad")
    )
    decoy = json.loads(json.dumps(src))
    decoy["extra_info"].update(
        compile="on",
        case_id=src["extra_info"]["case_id"] + "-compile_on",
        block_flow=["moved"] * 4,
    )
    decoy["name"] = decoy["fullname"] = decoy["extra_info"]["case_id"]
    doc["benchmarks"].append(decoy)
    path = tmp_path_factory.mktemp("flow") / "run.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    run = load_run(str(path))
    truth = {
        b["extra_info"]["case_id"]: b["extra_info"]
        for b in [*doc["benchmarks"], *doc["freeze_bench"]["failed"]]
    }
    return build_report([run], tidy([run])), truth


def _map_cells(fig: Figure) -> tuple[str, list[str], list[list[str]]]:
    """(title, row labels, codes per row) read back from a backward map's artists."""
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    cells: list[list[str]] = [[] for _ in labels]
    for t in ax.texts:
        gid = t.get_gid() or ""
        if gid.startswith("cell:"):
            _, i, j, code = gid.split(":")
            assert int(j) == len(cells[int(i)])
            cells[int(i)].append(code)
    return fig.get_suptitle(), labels, cells


def test_backward_map_per_family_linked_and_agrees_with_verdicts(
    flow_report: tuple[Any, dict[str, Any]],
) -> None:
    rendered, truth = flow_report
    md = rendered.markdown
    maps = {n: f for n, f in rendered.figures.items() if n.endswith("-backward-map.png")}
    families = sorted({r["model"] for r in truth.values()})
    assert sorted(maps) == [f"{m}-backward-map.png" for m in families]
    for model in families:
        part = _section(md, f"### {model}")
        assert f"({model}-backward-map.png)" in part
        caption = next(x for x in part.splitlines() if x.startswith("*Backward map*"))
        assert "eager float32, one process" in caption

    title, labels, cells = _map_cells(maps["mlp-backward-map.png"])
    # Depth 4 holds 16 of mlp's 20 eager cases; the compiled decoy is another set-up.
    assert title.startswith("Backward map: mlp, depth 4\neager float32, one process")
    assert "depth 4" in next(x for x in _section(md, "### mlp").splitlines() if "*Backward" in x)
    assert all(len(row) == 4 for row in cells)
    assert not any("compile" in label for label in labels)
    eager = {
        f"{r['pattern']} / {r['mechanism']}": r
        for r in truth.values()
        if r["model"] == "mlp" and r["depth"] == 4 and "compile" not in r
    }
    assert sorted(labels) == sorted(eager)
    for label, row in zip(labels, cells, strict=True):
        rec = eager[label]
        assert row == (rec["block_flow"] or ["n/a"] * 4), label
        if rec["status"] != "ok":
            continue
        assert ("starved" in row) == (rec["verdict"] == "graph_cut"), label
        assert ("moved" in row) == (rec["verdict"] == "frozen_param_moved"), label
    # The graph_cut case: block 0 is trainable and starved behind frozen block 1.
    middle_cut = cells[labels.index("middle / no_grad")]
    assert middle_cut[0] == "starved" and eager["middle / no_grad"]["verdict"] == "graph_cut"
    # The valid requires_grad middle case: frozen block 1 passes the input gradient on.
    middle_rg = cells[labels.index("middle / requires_grad")]
    assert eager["middle / requires_grad"]["valid"]
    assert middle_rg[1] == "x" and "starved" not in middle_rg
    # The case that failed with an error was not checked: its row is n/a, not left out.
    assert cells[labels.index("middle / backward_inputs")] == ["n/a"] * 4


def test_no_flow_means_no_map_and_a_sentence(cpu_md: str) -> None:
    assert "-backward-map.png" not in cpu_md
    assert "No backward maps: this run has no per-block flow (`block_flow`" in cpu_md
