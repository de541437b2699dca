"""The findings registry and the report's opening: the first screen of decisions, every
finding's headline at the head of its numbered section, the tie-aware family × pattern table,
remedies, caveats, traps never ranked, foreign memory flagged.

Truths are read from the fixture files with ``json`` (not through results.py); fixture
variants (a trap that passed, foreign memory) are written to ``tmp_path``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from report_parsing import section, tables

from bench_lib.analysis.findings import REGISTRY, Facts, Finding, Needs, facts, findings, register
from bench_lib.analysis.glance import FIRST_SCREEN_WIDTH, FIRST_SCREEN_WORDS, decisions, word_count
from bench_lib.analysis.ranking import decide, equivalent, equivalent_set
from bench_lib.analysis.report import build_report, headings
from bench_lib.analysis.results import load_run, tidy
from bench_lib.analysis.tables import best_valid
from bench_lib.vocab import TRAP_MECHANISMS

FIXTURES = Path(__file__).parent / "fixtures"
CPU = FIXTURES / "cpu_run.json"
DEFAULT = Path(__file__).parent.parent / "results" / "default-cpu.json"
CHEAPEST = "## Cheapest valid set by family and pattern"


def _md(*paths: Path) -> str:
    runs = [load_run(str(p)) for p in paths]
    return build_report(runs, tidy(runs)).markdown


def _glance(md: str) -> list[str]:
    """Every finding's headline (the first line of its section, as a bullet), then the lines
    of the family × pattern section."""
    answers = section(md, "## Answers").splitlines()
    heads = [
        "- " + answers[i + 2]
        for i, x in enumerate(answers)
        if re.match(r"^### \d+\. ", x) and answers[i + 2].startswith("**")
    ]
    return heads + section(md, CHEAPEST).splitlines()


def _first_screen(paths: list[Path]) -> str:
    """The first screen (title and decisions) of the report of ``paths``, built without the
    figures."""
    runs = [load_run(str(p)) for p in paths]
    f = facts(tidy(runs), runs)
    return "\n".join(decisions(f, headings(findings())))


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
        # Its place: after `no_grad` (10) and before optimizer_only (20), numbered from it.
        labels = [x.split("**")[1] for x in glance if x.startswith("- **")]
        assert labels[0] == "`no_grad`" and labels[1] == "Extra" and "optimizer_only" in labels[2]
        body = md.split("## Answers", 1)[1]
        assert body.index("### 1. What") < body.index("### 2. Extra question")
        assert body.index("### 2. Extra question") < body.index("### 3. Is freezing X")
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


def test_the_report_opens_with_decisions_and_numbers_its_sections(cpu_md: str) -> None:
    lines = cpu_md.splitlines()
    assert lines[0] == "# freeze-bench report"
    assert next(x for x in lines if x.startswith("## ")) == "## Decisions"
    # Every finding's section is numbered from its order and opens with its headline.
    numbered = [x for x in lines if re.match(r"^### \d+\. ", x)]
    assert [int(x.split(".")[0][4:]) for x in numbered] == list(range(1, len(findings()) + 1))
    for heading, finding in zip(numbered, findings(), strict=True):
        assert heading == f"### {numbered.index(heading) + 1}. {finding.title}"
        after = lines[lines.index(heading) + 2]
        assert after.startswith(f"**{finding.label}**: "), finding.name
    assert not any(re.match(r"^### \d\. .*\d\. ", x) for x in numbered)


def _screen_text(md: str) -> str:
    return md.split(CHEAPEST, 1)[0]


def test_first_screen_fits_on_the_default_run() -> None:
    runs = [load_run(str(DEFAULT))]
    f = facts(tidy(runs), runs)
    screen = "\n".join(
        ["# freeze-bench report", "", f"Freezing layers in a training step, measured in "
         f"`{DEFAULT}`.", "", *decisions(f, headings(findings()))]
    )  # fmt: skip
    assert word_count(screen) <= FIRST_SCREEN_WORDS
    assert max(len(x) for x in screen.splitlines()) <= FIRST_SCREEN_WIDTH
    rows = {r["situation"]: r for r in tables(screen)[0]}
    assert list(rows) == [
        "frozen prefix",
        "middle / non-consecutive",
        "BatchNorm",
        "under DDP",
        "under FSDP2",
        "LoRA vs freezing",
    ]
    for row in rows.values():  # a set, its ratios and cases, and what to avoid
        assert re.search(
            r"\d\.\d\d×, \d\.\d\d×", row["use (equivalent set): time, peak vs baseline (cases)"]
        )
        assert row["avoid: why"] not in ("", "—")
    assert rows["BatchNorm"]["use (equivalent set): time, peak vs baseline (cases)"].startswith(
        "eval"
    )
    assert "eval: uses running stats" in rows["BatchNorm"]["avoid: why"]
    assert "no_grad: refused by the set-up (4/4)" in rows["under DDP"]["avoid: why"]
    text = " ".join(screen.split())
    assert "`no_grad` records no graph: on a frozen prefix it takes" in text
    assert re.search(
        r"X need not be frozen when only Y is optimized \(correct in (\d+)/\1 cases\)", text
    )
    assert "Through frozen middle blocks `requires_grad` still passes the input gradient" in text
    assert "Non-consecutive blocks freeze with" in text
    for i in range(5, len(findings()) + 1):
        assert f"[{i}](#{i}-" in text


def test_first_screen_sentences_carry_the_data(tmp_path: Path) -> None:
    screen = " ".join(_first_screen([CPU]).split())
    # no_grad valid on the prefixes: 0.62, 0.56, 0.43 -> 0.56; peaks 0.75, 0.70, 0.4167 -> 0.70.
    assert "on a frozen prefix it takes 0.56× the baseline's time and 0.70× its peak (3 valid" in (
        screen
    )
    assert "it cuts the graph (3/6 cases)" in screen
    # optimizer_only / requires_grad time ratios: median 1.348 (see test_report's q2).
    assert "(correct in 4/4 cases), but not freezing it costs 1.35× the time" in screen

    def slower(doc: dict[str, Any]) -> None:
        for b in doc["benchmarks"]:
            r = b["extra_info"]
            if r["mechanism"] == "no_grad" and r["pattern"] == "prefix":
                r["time_ratio"] = 0.90
                r["time_ratio_ci_low"], r["time_ratio_ci_high"] = 0.88, 0.92

    before = {r["situation"]: r for r in tables(_first_screen([CPU]))[0]}
    use = "use (equivalent set): time, peak vs baseline (cases)"
    assert before["frozen prefix"][use] == "no_grad = requires_grad: 0.56×, 0.70× (3)"
    raw = _first_screen([_variant(tmp_path, "slow.json", slower)])
    assert "on a frozen prefix it takes 0.90× the baseline's time" in " ".join(raw.split())
    # no_grad is now distinct from requires_grad (0.64, 0.58, 0.47): it leaves the set.
    after = {r["situation"]: r for r in tables(raw)[0]}
    assert after["frozen prefix"][use].startswith("requires_grad (2/3 groups): 0.58×, 0.72× (3)")


def test_headlines_head_their_sections(cpu_md: str) -> None:
    glance = "\n".join(_glance(cpu_md))
    # no_grad / requires_grad on the 3 valid prefixes: 0.62/0.64, 0.56/0.58, 0.43/0.47 -> 0.9655;
    # peaks 300k/310k, 560k/580k, 500k/520k -> 0.9655.
    assert "- **`no_grad`**: 6 cases: valid in 3 of 6; ✗ graph_cut in 3" in glance
    assert "0.97× its time and 0.97× its peak memory (medians over 3 pairs)" in glance
    assert "Not freezing X took 1.35× the time" in glance
    assert "freezing X was needed for correctness in 0 of them" in glance
    # middle: requires_grad valid in d4 (0.88) and d8 (0.85): median 0.865.
    assert "cut the graph in 2 of 2 cases; cheapest valid: `requires_grad`, a median 0.86×" in (
        glance
    )
    # no_grad (0.43, peak 500k) and requires_grad (0.47, peak 520k) overlap: no_grad first.
    assert "the cheapest valid way to freeze X was `no_grad`: 0.43× the baseline's time" in glance
    assert "(equivalent in time, within the noise: `requires_grad`;" in glance


def test_family_table_names_the_equivalent_set(cpu_md: str) -> None:
    table = _table(section(cpu_md, CHEAPEST).splitlines())
    assert [row["family"] for row in table] == ["mlp", "xy (seed)"]
    mlp = table[0]
    # prefix d4: no_grad 0.62 [.., ..] and requires_grad 0.64 overlap; d8 likewise. no_grad's
    # peak (300k, 560k) is below requires_grad's (310k, 580k), so it comes first; its medians:
    # time (0.62 + 0.56) / 2 = 0.59, peak (0.75 + 0.70) / 2 = 0.725.
    assert mlp["prefix"] == "`no_grad` = `requires_grad` 0.59× time, 0.72× memory"
    # no_grad (0.70x) and inference_mode (0.69x) are faster in the middle but cut the graph.
    assert mlp["middle"].startswith("`requires_grad` 0.86× time")
    assert table[1]["prefix"] == "`no_grad` = `requires_grad` 0.43× time, 0.42× memory"
    assert "none valid" not in section(cpu_md, CHEAPEST)


def _r(
    mechanism: str, ratio: float, low: float, high: float, peak: float, **kw: Any
) -> dict[str, Any]:
    return {
        "mechanism": mechanism, "time_ratio": ratio, "time_ratio_ci_low": low,
        "time_ratio_ci_high": high, "peak_memory_bytes": peak, "peak_ratio": peak / 100,
        "flops_ratio": kw.pop("flops", 1.0), "validity": kw.pop("validity", "valid"),
        "status": "ok", **kw,
    }  # fmt: skip


def test_ties_are_one_rule_and_sets_are_ordered_by_deterministic_costs() -> None:
    a = _r("requires_grad", 0.93, 0.91, 0.94, 60, flops=0.94)
    b = _r("optimizer_only", 0.92, 0.85, 1.05, 90, flops=1.0)
    c = _r("no_grad", 0.60, 0.58, 0.62, 50)
    assert equivalent(a, b) and equivalent(b, a) and not equivalent(a, c)
    # The noisier median is lower, yet the set is ordered by peak memory, then FLOPs.
    assert [r["mechanism"] for r in equivalent_set([b, a])] == ["requires_grad", "optimizer_only"]
    same_peak = _r("backward_inputs", 0.93, 0.90, 0.95, 60, flops=0.90)
    assert [r["mechanism"] for r in equivalent_set([a, same_peak])] == [
        "backward_inputs", "requires_grad",
    ]  # fmt: skip
    # A direct interval, once recorded, decides alone: inside 1 ± 5% is equivalent.
    a2 = {**a, "pair_ratios": {"optimizer_only": {"ci_low": 0.97, "ci_high": 1.02}}}
    assert equivalent(a2, b)
    a3 = {**a, "pair_ratios": {"optimizer_only": {"ci_low": 0.90, "ci_high": 0.97}}}
    assert not equivalent(a3, b)
    # Traps and invalid cases never join.
    trap = _r("late_freeze", 0.10, 0.05, 0.95, 10)
    bad = _r("inference_mode", 0.90, 0.80, 1.0, 10, validity="invalid")
    assert [r["mechanism"] for r in equivalent_set([a, trap, bad])] == ["requires_grad"]
    assert equivalent_set([trap, bad]) == []


def test_a_cell_over_several_groups_names_the_majority_and_says_they_disagree() -> None:
    def group(depth: int, rg: float, ng: float) -> list[dict[str, Any]]:
        return [
            _r("requires_grad", rg, rg - 0.01, rg + 0.01, 60, depth=depth),
            _r("no_grad", ng, ng - 0.01, ng + 0.01, 50, depth=depth),
        ]

    rows = group(4, 0.70, 0.80) + group(8, 0.60, 0.70) + group(16, 0.65, 0.65)
    d = decide(rows, key=lambda r: r["depth"])
    assert d is not None and d.members == ("requires_grad",)
    assert (d.agree, d.groups, d.disagree) == (2, 3, True)
    assert d.cell() == "`requires_grad` 0.65× time, 0.60× memory (in 2 of 3 groups)"
    agree = decide(group(4, 0.70, 0.80) + group(8, 0.60, 0.70), key=lambda r: r["depth"])
    assert agree is not None and not agree.disagree and "groups" not in agree.cell()
    assert decide([_r("no_grad", 0.5, 0.4, 0.6, 5, validity="invalid")]) is None


def test_a_tie_of_a_group_stopped_by_its_cap_is_named_not_resolved() -> None:
    """Kept together because the rounds could not tell them apart is not shown the same: the
    cell says so."""
    wide = {"ci_low": 0.85, "ci_high": 1.15}
    rows = [
        _r("requires_grad", 0.80, 0.70, 0.90, 60, resolved=False,
           pair_ratios={"optimizer_only": wide}),
        _r("optimizer_only", 0.82, 0.72, 0.92, 90, resolved=False,
           pair_ratios={"requires_grad": wide}),
    ]  # fmt: skip
    d = decide(rows)
    assert d is not None and d.members == ("requires_grad", "optimizer_only")
    assert d.unresolved == 1 and d.cell().endswith("(not resolved)")
    resolved = decide([{**r, "resolved": True} for r in rows])
    assert resolved is not None and resolved.unresolved == 0 and "resolved" not in resolved.cell()


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
        assert not re.search(rf"\| [^|]*\b{trap}\b[^|]* \(\d", md), trap  # never in a set
        assert not re.search(rf"equivalent[^\n]*`{trap}`", md), trap
        assert not re.search(rf"`{trap}` [\d.]+× time", md), trap
    table = _table(_glance(md))
    assert table[0]["prefix"].startswith("`no_grad` ")
    assert table[1]["prefix"].startswith("`no_grad` ")
    section = md.split("#### mlp · width 64", 1)[1].split("####", 1)[0]
    prefix = next(r for r in _table(section.splitlines()) if r["pattern"] == "prefix")
    assert prefix["inference_mode_nocopy"] == "0.30× (trap)"
    assert prefix["cheapest valid set"] == "no_grad = requires_grad (0.62×)"


def test_a_trap_that_passed_is_said_to_be_fragile(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "traps.json", _lucky_traps))
    assert (
        "(trap) `inference_mode_nocopy` passed the validity check here (depth 4 prefix 0.30×) "
        "but is a trap, never ranked: it passes only because no later op saved the "
        "inference-mode output for backward" in md
    )
    seed = md.split("### 5. The seed scenario", 1)[1].split("###", 1)[0]
    assert "The cheapest valid way to freeze X was `no_grad`" in seed
    assert "`late_freeze` passed the validity check here (0.20×) but is a trap" in seed
    assert "momentum" in seed
    traps = md.split(headings(findings())["traps"], 1)[1]
    traps = traps.split("\n## ", 1)[0]
    assert (
        "- **`inference_mode_nocopy`** (1 case): valid in 1 of 1. Passed in "
        "`mlp-d4-w64-b16-prefix-inference_mode_nocopy-adamw-cpu-float32`, and still fragile: it "
        "passes only because" in traps
    )
    glance = "\n".join(_glance(md))
    assert "`late_freeze` valid in 1 of 1" in glance


def test_best_valid_skips_traps_and_invalid_and_names_the_cure() -> None:
    rows = [
        _r("zeroed_grad_in_optimizer", 0.10, 0.05, 0.35, 10),
        _r("no_grad", 0.20, 0.15, 0.25, 10, validity="invalid", verdict="graph_cut"),
        _r("inference_mode", 0.30, 0.25, 0.35, 40),
        _r("requires_grad", 0.50, 0.45, 0.55, 40),
    ]
    cells = {r["mechanism"]: r for r in rows}
    # The trap's interval reaches into the winner's, yet it is not even named.
    assert best_valid(cells) == "inference_mode (0.30×)"
    moved = {
        m: {**r, "validity": "invalid", "verdict": "frozen_buffer_changed"}
        for m, r in cells.items()
        if m != "zeroed_grad_in_optimizer"
    }
    assert best_valid(moved) == (
        "frozen blocks in eval mode: not measured in this run (as run: invalid)"
    )
    cure = [{**r, "frozen_mode": "eval"} for r in rows[2:]]
    assert (
        best_valid(moved, cure)
        == "frozen blocks in eval mode: inference_mode (0.30×) (as run: invalid)"
    )
    cut = {m: {**r, "validity": "invalid", "verdict": "graph_cut"} for m, r in cells.items()}
    assert best_valid(cut, cure) == "none valid"


def _batchnorm(doc: dict[str, Any]) -> None:
    """The mlp's train-mode prefix cases move BatchNorm statistics; eval-mode twins of d4's."""
    for b in list(doc["benchmarks"]):
        r = b["extra_info"]
        if r["model"] != "mlp" or r["pattern"] != "prefix" or r["mechanism"] == "none":
            continue
        if r["mechanism"] in ("no_grad", "requires_grad") and r["depth"] == 4:
            new = copy.deepcopy(b)
            case_id = r["case_id"].replace(f"-{r['mechanism']}-", f"-{r['mechanism']}-eval-")
            new["name"] = new["param"] = case_id
            new["extra_info"].update(case_id=case_id, frozen_mode="eval")
            doc["benchmarks"].append(new)
        r.update(valid=False, verdict="frozen_buffer_changed", verdict_detail="bn moved")


def test_a_curable_cell_shows_the_cure_and_its_measured_result(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "bn.json", _batchnorm))
    table = _table(section(md, CHEAPEST).splitlines())
    # d4's eval-mode twins: no_grad 0.62 (peak 300k of 400k), requires_grad 0.64 (310k): tied.
    assert table[0]["prefix"] == (
        "frozen blocks in eval mode: `no_grad` = `requires_grad` 0.62× time, "
        "0.75× memory (as run: invalid)"
    )
    rows = {r["situation"]: r for r in tables(md.split(CHEAPEST)[0])[0]}
    assert rows["BatchNorm"]["use (equivalent set): time, peak vs baseline (cases)"] == (
        "eval + no_grad = requires_grad: 0.62×, 0.75× (1)"
    )
    assert rows["BatchNorm"]["avoid: why"].startswith("train mode: stats move (")
    per_setup = md.split("#### mlp · width 64", 1)[1].split("####", 1)[0]
    d8 = next(
        r for r in _table(per_setup.splitlines()) if r["depth"] == "8" and r["pattern"] == "prefix"
    )
    assert (
        d8["cheapest valid set"]
        == "frozen blocks in eval mode: not measured in this run (as run: invalid)"
    )


def _drift(doc: dict[str, Any]) -> None:
    for b in doc["benchmarks"]:
        r = b["extra_info"]
        if r["case_id"] == "mlp-d4-w64-b16-prefix-requires_grad-adamw-cpu-float32":
            r.update(valid=True, verdict="rounding_drift", frozen_drift_per_step=1.2e-8)


def test_rounding_drift_is_a_caveat_never_a_cross(tmp_path: Path) -> None:
    md = _md(_variant(tmp_path, "drift.json", _drift))
    assert "✗ rounding_drift" not in md and "✗ 0.64× rounding_drift" not in md
    assert "- ✓ `rounding_drift`: valid with a caveat" in md
    per_setup = md.split("#### mlp · width 64", 1)[1].split("####", 1)[0]
    overview, every = _table(per_setup.splitlines()), tables(per_setup)[1]
    d4 = next(r for r in overview if r["depth"] == "4" and r["pattern"] == "prefix")
    assert d4["requires_grad"] == "0.64× (rounding drift ~1e-08/step)"
    assert "requires_grad" in d4["cheapest valid set"]  # still valid, still ranked
    case = next(
        r for r in every
        if r["depth"] == "4" and r["pattern"] == "prefix" and r["mechanism"] == "requires_grad"
    )  # fmt: skip
    assert case["verdict"] == "✓ valid, rounding drift ~1e-08/step"
    q1 = section(md, "### 1. " + REGISTRY["no_grad"].title)
    assert "valid in 3 of 6" in q1


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
    assert f"**Foreign memory**: {flagged}" in _glance(md)
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
    plan: dict[str, dict[str, Any]] = {
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
    body = section(md, headings(findings())["parallel_verdicts"])
    assert "| `ddp` | ✓ 0 of 1; ✗ error 1 (prefix) | ✓ 1 of 1 | ✓ 1 of 1 |" in body
    # The parallel baseline gets its own setup table in the per-family results.
    assert "· ddp on 2 ranks" in md
