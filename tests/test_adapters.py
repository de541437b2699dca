"""LoRA adapters (peft) beside freezing: targets, the state peft leaves the frozen blocks in,
verdicts, the bytes by hand, and nothing of a LoRA case outliving it."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from report_parsing import section, tables
from test_isolation import TINY, _assert_clean, _census, _time_steps

from bench_lib.analysis.report import build_report
from bench_lib.analysis.results import is_baseline_row, load_run, tidy
from bench_lib.measuring import adapters, memory, runner, verify
from bench_lib.measuring.adapters import AdaptedPlan
from bench_lib.measuring.families.hf import transformers_missing
from bench_lib.measuring.profiles import PROFILES
from bench_lib.measuring.spec import Case
from bench_lib.measuring.sweep import Filters, generate
from bench_lib.measuring.training import build_workload, skeleton
from bench_lib.vocab import MODELS

needs_peft = pytest.mark.skipif(adapters.peft_missing() is not None, reason="peft missing")
needs_transformers = pytest.mark.skipif(
    transformers_missing() is not None, reason="transformers missing"
)


def _mlp(pattern: str = "prefix", mechanism: str = "requires_grad", rank: int = 2) -> Case:
    blocks = {"none": (), "prefix": (0, 1), "middle": (1,)}[pattern]
    return Case("mlp", 4, 8, 2, pattern, blocks, mechanism, adapter="lora", lora_rank=rank)


def _transformer(pattern: str = "none", mechanism: str = "none") -> Case:
    blocks = {"none": (), "prefix": (0,)}[pattern]
    return Case(
        "transformer", 2, 16, 2, pattern, blocks, mechanism, extra=(("seq_len", 4),),
        adapter="lora", lora_rank=4,
    )  # fmt: skip


# ---------------------------------------------------------------------------- targets


def test_every_family_has_targets() -> None:
    assert set(adapters.TARGETS) == set(MODELS)


def test_attention_is_adapted_whole_never_its_out_proj() -> None:
    built = skeleton(_transformer())
    names = adapters.target_names(_transformer(), built.model, built.blocks)
    assert names == [f"blocks.{i}.{m}" for i in (0, 1) for m in ("self_attn", "linear1", "linear2")]


def test_frozen_blocks_get_no_adapter() -> None:
    case = _mlp("prefix")
    built = skeleton(case)
    assert adapters.target_names(case, built.model, built.blocks) == ["blocks.2.0", "blocks.3.0"]


@needs_transformers
@pytest.mark.parametrize(
    ("model", "layer"),
    [("bert", ("query", "key", "value", "dense")), ("gpt2", ("c_attn", "c_proj", "c_fc"))],
)
def test_transformers_targets(model: str, layer: tuple[str, ...]) -> None:
    case = Case(model, 2, 32, 2, "prefix", (0,), "requires_grad", adapter="lora", lora_rank=4)
    built = skeleton(case)
    names = adapters.target_names(case, built.model, built.blocks)
    assert names and {n.rsplit(".", 1)[1] for n in names} == set(layer)
    assert not any("embeddings" in n or "wte" in n for n in names)  # block 0 is frozen


# ---------------------------------------------------------------------------- peft's state


@needs_peft
@pytest.mark.parametrize("mechanism", ["optimizer_only", "backward_inputs", "no_grad"])
def test_frozen_blocks_get_back_the_state_their_mechanism_expects(mechanism: str) -> None:
    """peft marks every non-adapter parameter requires_grad=False; the frozen blocks get
    requires_grad=True back (their mechanism freezes them), the head trains, the adapted
    blocks' base weights stay frozen and out of the optimizer."""
    w = build_workload(_mlp("prefix", mechanism))
    assert isinstance(w.plan, AdaptedPlan)
    named = dict(w.model.named_parameters())
    frozen = [n for n in named if n.startswith(("blocks.0.", "blocks.1."))]
    assert frozen and all(named[n].requires_grad for n in frozen)
    base = [n for n, _ in w.plan.base_params()]
    assert base == [f"blocks.{i}.0.base_layer.{k}" for i in (2, 3) for k in ("weight", "bias")]
    assert not any(named[n].requires_grad for n in base)
    in_optimizer = {id(p) for g in w.optimizer.param_groups for p in g["params"]}
    trainable = [n for n, p in named.items() if id(p) in in_optimizer]
    assert trainable == [
        *(f"blocks.{i}.0.lora_{ab}.default.weight" for i in (2, 3) for ab in "AB"),
        "head.weight",
        "head.bias",
    ]
    # Block names still resolve, and a module-level mechanism wraps the frozen blocks only.
    wrapped = [n for n, m in w.model.named_modules() if "forward" in m.__dict__]
    assert wrapped == (["blocks.0", "blocks.1"] if mechanism == "no_grad" else [])


@needs_peft
def test_requires_grad_mechanism_still_freezes_its_blocks() -> None:
    w = build_workload(_mlp("prefix", "requires_grad"))
    assert not any(p.requires_grad for p in w.frozen_params)


# ---------------------------------------------------------------------------- verdicts


@needs_peft
@pytest.mark.parametrize(
    ("case", "verdict"),
    [
        (_mlp("prefix", "requires_grad"), "ok"),
        (_mlp("prefix", "no_grad"), "ok"),
        (_mlp("prefix", "optimizer_only"), "ok"),
        (_mlp("none", "none"), "ok"),
        (_mlp("middle", "requires_grad"), "ok"),
        # The adapters before a frozen middle block under no_grad receive nothing.
        (_mlp("middle", "no_grad"), "graph_cut"),
        (_mlp("prefix", "zeroed_grad_in_optimizer"), "frozen_param_moved"),
    ],
    ids=lambda v: v.id if isinstance(v, Case) else v,
)
def test_verdicts(case: Case, verdict: str) -> None:
    v = verify.check_case(case)
    assert v.verdict == verdict, v.detail


@needs_peft
def test_lora_a_gets_its_first_gradient_on_the_second_step() -> None:
    """peft starts B at zero, so every A's gradient is exactly 0 on the first step: one step
    is too few to see a gradient reach every adapter tensor, the check's steps are enough."""
    assert verify.check_case(_mlp(), steps=1).verdict == "graph_cut"
    assert verify.check_case(_mlp(), steps=verify.CHECK_STEPS).verdict == "ok"


@needs_peft
def test_base_weights_stay_bit_identical() -> None:
    w = build_workload(_mlp("none", "none"))
    before = {n: p.detach().clone() for n, p in w.plan.base_params()}
    for _ in range(3):
        w.step()
    assert {n: torch.equal(p, before[n]) for n, p in w.plan.base_params()} == dict.fromkeys(
        before, True
    )
    assert any(bool(p.any()) for p in w.plan.adapter_params() if p.shape[0] == 8)  # B moved


@needs_peft
def test_lora_on_out_proj_alone_never_gets_a_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn.MultiheadAttention reads out_proj.weight directly: a LoRA on out_proj alone never
    runs. The reference (the same adapted model) gets no gradient there either, so only the
    'non-zero within the steps' check can call it: graph_cut."""

    def out_proj_only(case: Case, model: torch.nn.Module, blocks: object) -> list[str]:
        return ["blocks.0.self_attn.out_proj", "blocks.1.self_attn.out_proj"]

    monkeypatch.setattr(adapters, "target_names", out_proj_only)
    v = verify.check_case(_transformer())
    assert v.verdict == "graph_cut", v.detail
    assert "4 of 6 trainable parameter tensors" in v.detail  # the 4 adapter tensors; head fine


@needs_peft
def test_peft_attention_moves_base_weights_by_rounding() -> None:
    """peft's MultiheadAttention layer merges the adapters into the base weights before each
    forward and subtracts them after it: the base weights move by rounding (peft 0.21), which
    the check reports as rounding drift (a caveat). The adapters' gradients match the
    reference."""
    v = verify.check_case(_transformer("prefix", "no_grad"))
    assert v.verdict == "rounding_drift", v.detail
    assert "moved by rounding only" in v.detail and "in_proj_weight" in v.detail
    assert "no gradient" not in v.detail and "differ from the reference" not in v.detail


# ---------------------------------------------------------------------------- bytes by hand


@needs_peft
def test_gradient_and_optimizer_bytes_by_hand() -> None:
    """MLP d4 w8, prefix (blocks 0, 1) frozen, LoRA rank 2 on blocks 2 and 3, head Linear(8, 10):
    adapters 2 x (A 2x8 + B 8x2) = 64 elements, head 80 + 10 = 90: 154 trainable float32
    elements, 616 bytes of gradients; AdamW keeps exp_avg and exp_avg_sq (1,232 bytes) and a
    float32 step tensor for each of the 6 parameter tensors (24 bytes)."""
    w = build_workload(_mlp("prefix", "requires_grad"))
    assert adapters.adapter_param_count(w.plan) == 64
    assert sum(p.numel() for p in w.trainable_intended) == 154
    counts = memory.measure_bytes_by_category(w)
    assert counts.grad_bytes == 154 * 4
    assert counts.optimizer_state_bytes == 2 * 154 * 4 + 6 * 4
    # Parameters: the base model (4 x (64 + 8) + 90 = 378 elements) and the adapters.
    assert counts.param_bytes == (378 + 64) * 4


# ---------------------------------------------------------------------------- plan-time skips


@needs_peft
def test_skips_name_their_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no block to adapt" in str(
        generate(
            PROFILES["quick"],
            Filters(models=("mlp",), patterns=("all_but_head",), adapters=("lora",)),
        ).skips
    )
    only_embeddings = Case("bert", 2, 32, 2, "explicit", (1, 2), "requires_grad", adapter="lora",
                           lora_rank=4)  # fmt: skip
    if transformers_missing() is None:
        assert "hold no layer it adapts (linear)" in str(adapters.skip_reason(only_embeddings))
    compiled = dataclasses.replace(_transformer(), compile="on")
    assert "torch.compile cannot compile peft's LoRA" in str(adapters.skip_reason(compiled))
    assert adapters.skip_reason(dataclasses.replace(_mlp(), compile="on")) is None
    names = dataclasses.replace(_mlp(), pattern="names", frozen_blocks=(), freeze=("blocks.0.*",))
    assert "pattern names freezes parameters by name" in str(adapters.skip_reason(names))
    monkeypatch.setattr(adapters, "peft_missing", lambda: "peft is not installed (x)")
    sweep = generate(PROFILES["quick"], Filters(models=("mlp",), adapters=("lora",)))
    reasons = {s.reason for s in sweep.skips if "all_but_head" not in s.id}
    assert reasons == {"peft is not installed (x)"}
    assert all(c.adapter == "none" for c in sweep.cases)  # the baselines still run


def test_missing_peft_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters.importlib.util, "find_spec", lambda name: None)
    assert adapters.peft_missing() == (
        'peft is not installed (the models extra): pip install -e ".[models]"'
    )


# ---------------------------------------------------------------------------- isolation


@pytest.fixture(scope="module")
def _warm() -> Iterator[None]:
    runner.warm_up_process("cpu")
    for case in (_mlp(), _transformer()):  # peft's first use (imports, caches)
        runner.measure_case(case, TINY, _time_steps)
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@needs_peft
@pytest.mark.usefixtures("_warm")
@pytest.mark.parametrize("case", [_mlp("prefix", "no_grad"), _transformer()], ids=lambda c: c.id)
def test_a_lora_case_end_to_end_leaves_nothing(case: Case) -> None:
    before = _census()
    record = runner.measure_case(case, TINY, _time_steps)
    assert record["status"] == "ok", record["status_message"]
    assert record["adapter"] == "lora" and record["lora_rank"] == case.lora_rank
    assert record["adapter_params"] and record["adapter_params"] < record["trainable_params"]
    assert record["foreign_bytes"] == 0
    _assert_clean(before, record)


# ---------------------------------------------------------------------------- the report

FIXTURE = Path(__file__).parent / "fixtures" / "cpu_run.json"
PREFIX = "mlp-d4-w64-b16-prefix-requires_grad-adamw-cpu-float32"


def _lora_run(tmp_path: Path, counts: dict[int, int]) -> tuple[Path, Path]:
    """The CPU fixture as is, and with LoRA rows added from its MLP prefix case (trainable
    count 8,645, time ratio 0.64): LoRA on the whole model at the ranks and trainable counts of
    ``counts`` (twice the prefix's time ratio), and at rank 16 the prefix under requires_grad and
    no_grad (LoRA on the upper half)."""
    doc = json.loads(FIXTURE.read_text(encoding="utf-8"))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(doc), encoding="utf-8")
    source = next(b for b in doc["benchmarks"] if b["extra_info"]["case_id"] == PREFIX)

    def add(case_id: str, **record: Any) -> None:
        new = copy.deepcopy(source)
        new["name"] = new["param"] = case_id
        new["extra_info"].update(case_id=case_id, adapter="lora", **record)
        doc["benchmarks"].append(new)

    for rank, count in counts.items():
        add(f"mlp-d4-w64-b16-none-none-adamw-cpu-float32-lora{rank}", pattern="none",
            frozen_blocks=[], mechanism="none", lora_rank=rank, trainable_params=count,
            adapter_params=count - 650, time_ratio=1.28)  # fmt: skip
    for mechanism, ratio in (("requires_grad", 0.60), ("no_grad", 0.66)):
        add(f"mlp-d4-w64-b16-prefix-{mechanism}-adamw-cpu-float32-lora16", mechanism=mechanism,
            lora_rank=16, trainable_params=4746, adapter_params=4096, time_ratio=ratio)  # fmt: skip
    adapted = tmp_path / "lora.json"
    adapted.write_text(json.dumps(doc), encoding="utf-8")
    return plain, adapted


def _report(path: Path) -> str:
    runs = [load_run(str(path))]
    return build_report(runs, tidy(runs)).markdown


def _glance(md: str) -> list[str]:
    """Every finding's headline (its section's first line, as a bullet) and the family table."""
    lines = section(md, "## Answers").splitlines()
    heads = ["- " + lines[i + 2] for i, x in enumerate(lines) if re.match(r"^### \d+\. ", x)]
    return heads + section(md, "## Cheapest valid set by family and pattern").splitlines()


def _headline(md: str, label: str) -> str:
    return next(x for x in _glance(md) if x.startswith(label))


def test_lora_rows_stay_out_of_the_freezing_findings(tmp_path: Path) -> None:
    plain, adapted = _lora_run(tmp_path, {8: 4746, 16: 8842})
    before, after = _report(plain), _report(adapted)
    glance_before, glance_after = _glance(before), _glance(after)
    # Every headline but the LoRA ones, and the family x pattern table, are unchanged.
    assert [x for x in glance_after if "LoRA" not in x] == [
        x for x in glance_before if "LoRA" not in x
    ]
    assert len(glance_after) <= 40
    assert "4 LoRA cases are left out of these tables and figures" in after
    frame = tidy([load_run(str(adapted))])
    assert frame[frame["adapter"] == "lora"]["has_baseline"].all()  # full fine-tuning's row
    assert sum(is_baseline_row(r) for r in frame.to_dict("records")) == 3  # mlp d4, d8, xy


def test_lora_against_the_prefix_at_a_matched_count(tmp_path: Path) -> None:
    _, adapted = _lora_run(tmp_path, {8: 4746, 16: 8842})
    md = _report(adapted)
    line = _headline(md, "- **LoRA against freezing the prefix")
    assert "(1 pair, trainable counts within 1.25×): time 2.00× (1 pair)" in line
    (row,) = tables(
        section(md, "### 8. LoRA against freezing the prefix, at a matched trainable count")
    )[0]
    assert (row["rank"], row["LoRA trains"], row["prefix trains"]) == ("16", "8,842", "8,645")
    assert row["counts"] == "1.02× matched"
    line = _headline(md, "- **LoRA with `no_grad`")
    assert "against `requires_grad` on the same prefix: 1.10× the time" in line
    assert "against LoRA on the whole model: 0.52× the time" in line
    assert "from rank 8 to 16 the adapters grew" in _headline(md, "- **LoRA rank")


def test_lora_against_the_prefix_unmatched(tmp_path: Path) -> None:
    _, adapted = _lora_run(tmp_path, {8: 26000, 16: 52000})
    line = _headline(_report(adapted), "- **LoRA against freezing the prefix")
    assert "unmatched: no LoRA rank came within 1.25× of the prefix's trainable count" in line
    assert "(closest: rank 8 trains 26,000, the prefix 8,645)" in line


def test_lora_findings_say_when_not_measured(tmp_path: Path) -> None:
    plain, _ = _lora_run(tmp_path, {})
    md = _report(plain)
    for label in ("LoRA against freezing the prefix", "LoRA with `no_grad`", "LoRA rank"):
        assert "not measured in this run" in _headline(md, f"- **{label}")
