"""The findings registry and the report's opening: every finding's headline and the family ×
pattern table at a glance, traps never ranked, foreign memory flagged.

Truths are read from the fixture files with ``json`` (not through results.py); fixture
variants (a trap that passed, foreign memory) are written to ``tmp_path``.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from report_parsing import section, tables

from bench_lib.analysis.families import best_valid
from bench_lib.analysis.findings import REGISTRY, Facts, Finding, Needs, findings, register
from bench_lib.analysis.ranking import Choice, cheapest
from bench_lib.analysis.report import build_report
from bench_lib.analysis.results import load_run, tidy
from bench_lib.vocab import TRAP_MECHANISMS

FIXTURES = Path(__file__).parent / "fixtures"
CPU = FIXTURES / "cpu_run.json"
GLANCE_LIMIT = 40


def _md(*paths: Path) -> str:
    runs = [load_run(str(p)) for p in paths]
    return build_report(runs, tidy(runs)).markdown


def _glance(md: str) -> list[str]:
    """The lines of the "At a glance" section, its heading included."""
    return section(md, "## At a glance").splitlines()


def _table(lines: list[str]) -> list[dict[str, str]]:
    """The first markdown table in ``lines``."""
    return tables("\n".join(lines))[0]


def _variant(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads(CPU.read_text(encoding="utf-8"))
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _clone(doc: dict[str, Any], case_id: str, mechanism: str, **record: Any) -> None:
    """Add a copy of benchmark ``case_id`` under another mechanism, with record changes."""
    source = next(b for b in doc["benchmarks"] if b["extra_info"]["case_id"] == case_id)
    new = copy.deepcopy(source)
    new_id = case_id.replace(f"-{source['extra_info']['mechanism']}-", f"-{mechanism}-")
    new["name"] = new["param"] = new_id
    new["extra_info"].update(case_id=new_id, mechanism=mechanism, **record)
    doc["benchmarks"].append(new)


@pytest.fixture(scope="module")
def cpu_md() -> str:
    return _md(CPU)


# ---------------------------------------------------------------------------- registry


def test_every_finding_is_registered_in_order() -> None:
    names = [f.name for f in findings()]
    assert names == [
        "no_grad",
        "optimizer_only",
        "middle",
        "non_consecutive",
        "seed",
        "flops",
        "traps",
        "lora_vs_prefix",
        "lora_no_grad",
        "lora_rank",
        "step_savings",
        "compile_recompiles",
        "checkpoint_cost",
        "parallel_verdicts",
        "ddp_flags",
        "comm_bytes",
        "fsdp_memory",
    ]
    assert set(names) <= set(REGISTRY)
    for f in findings():
        assert f.title and f.label and isinstance(f.needs, Needs)


def test_a_new_finding_joins_by_registering_alone() -> None:
    @register
    class Extra(Finding):
        name = "extra-for-test"
        order = 15
        title = "Extra question"
        label = "Extra"
        needs: ClassVar[Needs] = Needs(where={"mechanism": ("requires_grad",)})

        def summary(self, f: Facts) -> str:
            return f"{len(self.rows(f))} requires_grad cases."

        def detail(self, f: Facts) -> list[str]:
            return ["The extra detail."]

    try:
        md = _md(CPU)
        glance = _glance(md)
        assert "- **Extra**: 7 requires_grad cases." in glance
        # Its place: after `no_grad` (10) and before optimizer_only (20), in both parts.
        labels = [x.split("**")[1] for x in glance if x.startswith("- **")]
        assert labels[0] == "`no_grad`" and labels[1] == "Extra" and "optimizer_only" in labels[2]
        body = md.split("## Answers", 1)[1]
        assert body.index("### 1. What") < body.index("### Extra question") < body.index("### 2.")
        assert "The extra detail." in body
    finally:
        REGISTRY.pop("extra-for-test")


def test_two_findings_of_one_name_are_refused() -> None:
    class Twin(Finding):
        name = "no_grad"
        order = 99
        title = label = "twin"
        needs: ClassVar[Needs] = Needs()

        def summary(self, f: Facts) -> str:
            return ""

        def detail(self, f: Facts) -> list[str]:
            return []

    with pytest.raises(ValueError, match="two findings are named 'no_grad'"):
        register(Twin)


def test_headlines_say_not_measured_when_rows_or_columns_are_absent() -> None:
    md = _md(FIXTURES / "cpu_run.json.journal.jsonl")  # no middle, no alternating, no seed
    glance = "\n".join(_glance(md))
    assert (
        "- **Frozen blocks in the middle**: not measured in this run (no case with pattern "
        "`middle`)." in glance
    )
    assert (
        "- **Non-consecutive frozen blocks (`alternating`, `explicit`)**: not measured in this "
        "run (no case with pattern `alternating` and `explicit`)." in glance
    )
    assert "- **Seed scenario (frozen transformer X feeding MLP Y)**: not measured in this run" in (
        glance
    )
    old = "\n".join(_glance(_md(FIXTURES / "old_schema.json")))
    assert (
        "- **Time against FLOPs**: not measured in this run (its cases have no `flops_ratio`)."
        in old
    )
    assert "✓" not in old and "cheapest valid:" not in old


# ---------------------------------------------------------------------------- at a glance


def test_at_a_glance_opens_the_report_within_40_lines(cpu_md: str) -> None:
    lines = cpu_md.splitlines()
    assert lines[0] == "# freeze-bench report"
    assert next(x for x in lines if x.startswith("## ")) == "## At a glance"
    glance = _glance(cpu_md)
    assert len(glance) <= GLANCE_LIMIT
    headlines = [x for x in glance if x.startswith("- **")]
    assert len(headlines) == len(findings())
    for finding in findings():
        assert any(x.startswith(f"- **{finding.label}**: ") for x in headlines), finding.name
    both = _md(CPU, FIXTURES / "cuda_run.json")
    assert len(_glance(both)) <= GLANCE_LIMIT


def test_at_a_glance_headlines_carry_the_key_numbers(cpu_md: str) -> None:
    glance = "\n".join(_glance(cpu_md))
    # no_grad / requires_grad on the 3 valid prefixes: 0.62/0.64, 0.56/0.58, 0.43/0.47 -> 0.9655;
    # peaks 300k/310k, 560k/580k, 500k/520k -> 0.9655.
    assert "- **`no_grad`**: 6 cases: valid in 3 of 6; ✗ graph_cut in 3" in glance
    assert "0.97× its time and 0.97× its peak memory (medians over 3 pairs)" in glance
    # optimizer_only / requires_grad time ratios -> median 1.348 (see test_report's q2).
    assert "Not freezing X took 1.35× the time" in glance
    assert "freezing X was needed for correctness in 0 of them" in glance
    # middle: requires_grad valid in d4 (0.88) and d8 (0.85): median 0.865.
    assert "cut the graph in 2 of 2 cases; cheapest valid: `requires_grad`, a median 0.86×" in (
        glance
    )
    assert "the cheapest valid way to freeze X was `no_grad`: 0.43× the baseline's time" in glance


def _expected_cell(rows: list[dict[str, Any]]) -> tuple[str, float, float, int, int]:
    """(mechanism, median time ratio, median peak ratio, valid, cases), computed here."""
    best: tuple[Any, ...] | None = None
    for mech in sorted({r["mechanism"] for r in rows}):
        if mech in TRAP_MECHANISMS:
            continue
        cases = [r for r in rows if r["mechanism"] == mech]
        valid = [r for r in cases if r["valid"]]
        if not valid:
            continue
        time = statistics.median(r["time_ratio"] for r in valid)
        peak = statistics.median(r["peak_ratio"] for r in valid)
        key = (-len(valid) / len(cases), time)
        if best is None or key < best[0]:
            best = (key, mech, time, peak, len(valid), len(cases))
    assert best is not None
    return best[1], best[2], best[3], best[4], best[5]


def test_at_a_glance_table_holds_the_cheapest_valid_mechanism(cpu_md: str) -> None:
    doc = json.loads(CPU.read_text(encoding="utf-8"))
    records = [b["extra_info"] for b in doc["benchmarks"]]
    base = {
        (r["model"], r["depth"]): r["peak_memory_bytes"]
        for r in records
        if r["mechanism"] == "none"
    }
    for r in records:
        r["peak_ratio"] = r["peak_memory_bytes"] / base[(r["model"], r["depth"])]
    frozen = [r for r in records if r["mechanism"] != "none"]
    table = _table(_glance(cpu_md))
    assert [row["family"] for row in table] == ["mlp", "xy (seed)"]
    seen = 0
    for row in table:
        model = row["family"].split(" ")[0]
        for pattern, cell in row.items():
            if pattern == "family":
                continue
            rows = [r for r in frozen if r["model"] == model and r["pattern"] == pattern]
            if not rows:
                assert cell == "—"
                continue
            mech, time, peak, valid, cases = _expected_cell(rows)
            expected = f"`{mech}` {time:.2f}× time, {peak:.2f}× memory"
            if valid < cases:
                expected += f" (valid in {valid} of {cases})"
            assert cell == expected, (model, pattern)
            seen += 1
    assert seen == 6
    mlp = table[0]
    # no_grad (0.70x) and inference_mode (0.69x) are faster in the middle but cut the graph.
    assert mlp["middle"].startswith("`requires_grad` 0.86× time")
    assert mlp["prefix"] == "`no_grad` 0.59× time, 0.72× memory"
    assert table[1]["prefix"] == "`no_grad` 0.43× time, 0.42× memory"


# ---------------------------------------------------------------------------- traps


def _lucky_traps(doc: dict[str, Any]) -> None:
    """A valid trap that is the fastest of its row, and one in the seed scenario."""
    _clone(
        doc,
        "mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32",
        "inference_mode_nocopy",
        time_ratio=0.30,
        time_ratio_ci_low=0.28,
        time_ratio_ci_high=0.60,
    )
    _clone(
        doc,
        "seed-xy-d4-w32-b4-prefix-no_grad-adamw-cpu-float32",
        "late_freeze",
        time_ratio=0.20,
        time_ratio_ci_low=0.18,
        time_ratio_ci_high=0.45,
    )


def test_a_trap_that_passed_is_never_the_cheapest(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "traps.json", _lucky_traps))
    for trap in TRAP_MECHANISMS:
        assert f"cheapest valid way to freeze X was `{trap}`" not in md
        assert f"cheapest valid: `{trap}`" not in md
        assert not re.search(rf"\| {trap} \(\d", md), trap  # never the best valid mechanism
        assert not re.search(rf"tied: [^|\n)]*{trap}", md), trap
        assert not re.search(rf"\(overlapping intervals\): [^\n]*`{trap}`", md), trap
    table = _table(_glance(md))
    assert table[0]["prefix"].startswith("`no_grad` ")
    assert table[1]["prefix"].startswith("`no_grad` ")
    section = md.split("#### mlp · width 64", 1)[1].split("####", 1)[0]
    prefix = next(r for r in _table(section.splitlines()) if r["pattern"] == "prefix")
    assert prefix["inference_mode_nocopy"] == "0.30× (trap)"
    assert prefix["best valid mechanism"].startswith("no_grad (0.62×)")


def test_a_trap_that_passed_is_said_to_be_fragile(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "traps.json", _lucky_traps))
    assert (
        "(trap) `inference_mode_nocopy` passed the validity check here (depth 4 prefix 0.30×) "
        "but is a trap, never ranked: it passes only because no later op saved the "
        "inference-mode output for backward" in md
    )
    seed = md.split("### The seed scenario", 1)[1].split("###", 1)[0]
    assert "The cheapest valid way to freeze X was `no_grad`" in seed
    assert "`late_freeze` passed the validity check here (0.20×) but is a trap" in seed
    assert "momentum" in seed
    traps = md.split("### Traps: mechanisms that are wrong in some setting", 1)[1]
    traps = traps.split("\n## ", 1)[0]
    assert (
        "- **`inference_mode_nocopy`** (1 case): valid in 1 of 1. Passed in "
        "`mlp-d4-w64-b16-prefix-inference_mode_nocopy-adamw-cpu-float32`, and still fragile: it "
        "passes only because" in traps
    )
    glance = "\n".join(_glance(md))
    assert "`late_freeze` valid in 1 of 1" in glance


def _row(mechanism: str, ratio: float, validity: str = "valid", **kw: Any) -> dict[str, Any]:
    return {
        "mechanism": mechanism,
        "time_ratio": ratio,
        "validity": validity,
        "status": "ok",
        "peak_ratio": 1.0,
        "time_ratio_ci_low": ratio - 0.05,
        "time_ratio_ci_high": ratio + 0.05,
        **kw,
    }


def test_ranking_skips_traps_invalid_and_partly_valid_mechanisms() -> None:
    rows = [
        _row("zeroed_grad_in_optimizer", 0.10),
        _row("no_grad", 0.20, "invalid"),
        _row("inference_mode", 0.30),
        _row("inference_mode", 0.90, "invalid"),  # valid in 1 of 2
        _row("requires_grad", 0.50),
        _row("requires_grad", 0.52),
    ]
    choice = cheapest(rows)
    assert isinstance(choice, Choice) and choice.mechanism == "requires_grad"
    assert choice.time_ratio == pytest.approx(0.51) and choice.cases == 2
    assert cheapest([_row("late_freeze", 0.1)]) is None
    assert cheapest([_row("no_grad", 0.3, "invalid")]) is None
    # The trap's interval reaches into the winner's, yet it is not even named as tied.
    cells = {r["mechanism"]: r for r in rows[:3]}
    assert best_valid(cells) == "inference_mode (0.30×)"


# ---------------------------------------------------------------------------- foreign memory


def _foreign(doc: dict[str, Any]) -> None:
    for b in doc["benchmarks"]:
        b["extra_info"].update(schema_version=2, foreign_bytes=0, workspace_bytes=0)
    by_id = {b["extra_info"]["case_id"]: b["extra_info"] for b in doc["benchmarks"]}
    by_id["mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32"]["foreign_bytes"] = 100 * 1024
    by_id["mlp-d8-w64-b16-prefix-no_grad-adamw-cpu-float32"]["foreign_bytes"] = 60 * 1024


def test_foreign_memory_is_flagged_at_a_glance_and_in_the_noise(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "foreign.json", _foreign))
    flagged = (
        "1 case had foreign memory alive (peak may be inflated): "
        "`mlp-d4-w64-b16-prefix-no_grad-adamw-cpu-float32` (100 KiB)."
    )
    assert f"- **Foreign memory**: {flagged}" in _glance(md)
    assert f"**Foreign memory.** {flagged}" in md
    assert "mlp-d8-w64-b16-prefix-no_grad-adamw-cpu-float32` (60" not in md  # under 64 KiB


def test_foreign_memory_on_cuda_allows_allocator_rounding(tmp_path: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            b["extra_info"].update(schema_version=2, foreign_bytes=2**20, workspace_bytes=2**22)
        doc["benchmarks"][0]["extra_info"]["foreign_bytes"] = 3 * 2**20

    cuda = json.loads((FIXTURES / "cuda_run.json").read_text(encoding="utf-8"))
    path = tmp_path / "cuda.json"
    edit(cuda)
    path.write_text(json.dumps(cuda), encoding="utf-8")
    md = _md(path)
    first = cuda["benchmarks"][0]["extra_info"]["case_id"]
    assert f"1 case had foreign memory alive (peak may be inflated): `{first}` (3.00 MiB)." in md


def test_no_foreign_memory_and_unmeasured_foreign_memory(tmp_path: Path, cpu_md: str) -> None:
    # Schema 1 files lack the field: nothing is flagged and nothing is claimed.
    assert "oreign memory" not in cpu_md

    def clean(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            b["extra_info"].update(schema_version=2, foreign_bytes=0, workspace_bytes=0)

    md = _md(_variant(tmp_path, "clean.json", clean))
    assert "**Foreign memory.** None: every case with the measurement (24)" in md
    assert not any("oreign" in x for x in _glance(md))


# ------------------------------------------------------------------------ data parallelism


PARALLEL_FINDINGS = ("parallel_verdicts", "ddp_flags", "comm_bytes", "fsdp_memory")


def _parallel_variant(doc: dict[str, Any]) -> None:
    """Copies of the d4 MLP's baseline and prefix cases under DDP on two ranks: no_grad refused
    (DDP's reduction error), requires_grad sending half the baseline's gradient bytes, and
    optimizer_only all of them; with step times far from the single-process ones, so that a
    single-process number mixing them in would show."""
    plan = {
        "none": {"comm_bytes": 1000},
        "requires_grad": {"comm_bytes": 500},
        "optimizer_only": {"comm_bytes": 1000},
        "no_grad": {
            "status": "error",
            "verdict": "error",
            "valid": False,
            "verdict_detail": "RuntimeError: Expected to have finished reduction in the prior "
            "iteration before starting a new one. This error indicates ...",
        },
    }
    for b in list(doc["benchmarks"]):
        r = b["extra_info"]
        if not r["case_id"].startswith("mlp-d4-") or r["pattern"] not in ("none", "prefix"):
            continue
        if r["mechanism"] not in plan:
            continue
        new = copy.deepcopy(b)
        case_id = f"{r['case_id']}-ddp-w2"
        new["name"] = new["param"] = case_id
        new["extra_info"].update(
            case_id=case_id, parallel="ddp", world_size=2, time_ratio=9.0, ddp_buckets=1,
            **plan[r["mechanism"]],
        )  # fmt: skip
        doc["benchmarks"].append(new)


def test_parallel_cases_get_their_own_findings_and_never_mix_into_the_others(
    tmp_path: Path,
) -> None:
    plain = _glance(_md(CPU))
    md = _md(_variant(tmp_path, "parallel.json", _parallel_variant))
    glance = _glance(md)
    # Every single-process headline and the family x pattern table are as without them.
    labels = [f"- **{f.label}**" for f in findings() if f.name in PARALLEL_FINDINGS]
    assert [x for x in glance if not x.startswith(tuple(labels))] == [
        x for x in plain if not x.startswith(tuple(labels))
    ]
    line = next(x for x in glance if x.startswith("- **Freezing under data parallelism**"))
    assert "2 of 3 parallel cases valid" in line
    assert "refused `no_grad` under `ddp` in 1 of 1" in line
    assert "Expected to have finished reduction in the prior iteration" in line
    line = next(x for x in glance if x.startswith("- **Gradient bytes communicated**"))
    assert "`requires_grad` 50% under `ddp`" in line and "`optimizer_only` 100% under `ddp`" in line
    body = section(md, "### Which mechanisms work under DDP and FSDP without extra flags")
    assert "| `ddp` | ✓ 0 of 1; ✗ error 1 (prefix) | ✓ 1 of 1 | ✓ 1 of 1 |" in body
    # The parallel baseline gets its own setup table in the per-family results.
    assert "· ddp on 2 ranks" in md
