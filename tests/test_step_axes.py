"""The step axes: autocast, torch.compile and activation checkpointing act as documented, are
counted, recorded, isolated per case, and reported apart from the eager float32 findings.

Compiling is slow the first time in a process (inductor's start-up, tens of seconds with an
empty cache), so the compiled cases here are few and tiny.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from test_isolation import TINY, _census, _time_steps  # the census of what a case leaves

from bench_lib.analysis.findings import REGISTRY, facts, findings
from bench_lib.analysis.glance import family_pattern_table
from bench_lib.analysis.results import load_run, tidy
from bench_lib.axes import Axis
from bench_lib.measuring import effects, memory, runner, sweep, verify
from bench_lib.measuring.budget import SMOKE_ROUNDS, Budget
from bench_lib.measuring.effects.base import Effect
from bench_lib.measuring.effects.checkpoint import checkpointed_blocks
from bench_lib.measuring.effects.compile import (
    CompileCounts,
    CompileWatch,
    StepError,
    check_compiled,
    compile_scope,
)
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.training import build_workload

FIXTURES = Path(__file__).parent / "fixtures"


def _mlp(pattern: str, mechanism: str, depth: int = 4, **axes: Any) -> Case:
    return Case("mlp", depth, 8, 2, pattern, pattern_blocks(pattern, depth), mechanism, **axes)


def _transformer(pattern: str, mechanism: str, **axes: Any) -> Case:
    return Case(
        "transformer", 4, 16, 2, pattern, pattern_blocks(pattern, 4), mechanism,
        extra=(("seq_len", 4),), **axes,
    )  # fmt: skip


@pytest.fixture(scope="module")
def late_freeze_compiled() -> Iterator[dict[str, Any]]:
    """A compiled late freeze, measured first: it also pays inductor's one-time start-up (its
    pattern tables stay alive for the process), so that the census below sees only cases."""
    runner.warm_up_process("cpu")
    record = runner.measure_case(_mlp("prefix", "late_freeze", compile="on"), TINY, _time_steps)
    gc.collect()
    gc.freeze()
    yield record
    gc.unfreeze()


# ---------------------------------------------------------------------------- autocast


def test_autocast_keeps_float32_state_and_saves_bf16_activations_and_weight_copies() -> None:
    b, w, classes = 4, 16, 10
    case = Case("mlp", 2, w, b, "none", (), "none", amp="bf16")
    work = build_workload(case)
    for _ in range(2):
        work.step()
    counts = memory.measure_bytes_by_category(work)
    # Parameters, gradients and AdamW's moments stay float32.
    assert {p.dtype for p in work.model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in work.model.parameters() if p.grad is not None} == {torch.float32}
    state = [v for s in work.optimizer.state.values() for v in s.values() if v.dim() > 0]
    assert state and {v.dtype for v in state} == {torch.float32}
    # Saved for backward, by hand (2 bytes a bf16 element): the input cast to bf16 and the two
    # ReLU outputs (the next linears' inputs: the same storages), then the loss's float32
    # log-softmax, int64 targets and its scalar total weight.
    loss_bytes = b * classes * 4 + b * 8 + 4
    assert counts.saved_activation_bytes == 3 * b * w * 2 + loss_bytes
    # Autocast's weight copies, counted apart: the second block's and the head's (the first
    # linear's input needs no gradient, so its backward keeps only that input; biases are never
    # needed).
    assert counts.autocast_weight_bytes == (w * w + classes * w) * 2
    plain = build_workload(Case("mlp", 2, w, b, "none", (), "none"))
    plain.step()
    eager = memory.measure_bytes_by_category(plain)
    assert eager.saved_activation_bytes == 3 * b * w * 4 + loss_bytes
    assert eager.autocast_weight_bytes == 0
    assert (counts.param_bytes, counts.optimizer_state_bytes) == (
        eager.param_bytes,
        eager.optimizer_state_bytes,
    )


def test_autocast_verdicts_use_the_autocast_tolerance() -> None:
    assert verify.tolerance(_mlp("prefix", "no_grad")) == verify.GRAD_RTOL["float32"]
    assert verify.tolerance(_mlp("prefix", "no_grad", amp="bf16")) == verify.GRAD_RTOL["bfloat16"]
    both = _mlp("prefix", "no_grad", amp="bf16", compile="on")
    assert verify.tolerance(both) == 2 * verify.GRAD_RTOL["bfloat16"]
    # The reference runs under the same autocast: the eager autocast case matches it exactly.
    assert "match the reference exactly" in verify.check_case(_mlp("middle", "requires_grad",
                                                                   amp="bf16")).detail  # fmt: skip
    assert verify.check_case(_mlp("middle", "no_grad", amp="bf16")).verdict == "graph_cut"


def test_fp16_scales_the_loss_and_leaves_true_gradients() -> None:
    """fp16 is a CUDA-only axis value in the sweep; its GradScaler path runs on CPU too."""
    case = _mlp("middle", "requires_grad", amp="fp16")
    work = build_workload(case)
    assert isinstance(work.effects.states["amp"], torch.amp.GradScaler)
    assert verify.check_case(case).verdict == "ok"


# ---------------------------------------------------------------------------- checkpointing


@pytest.mark.parametrize(("pattern", "mechanism"), [("none", "none"), ("prefix", "requires_grad")])
def test_checkpointing_lowers_saved_activations(pattern: str, mechanism: str) -> None:
    saved = {}
    for ckpt in ("off", "on"):
        work = build_workload(_transformer(pattern, mechanism, checkpoint=ckpt))
        work.step()
        saved[ckpt] = memory.measure_bytes_by_category(work).saved_activation_bytes
    assert 0 < saved["on"] < saved["off"]


def test_checkpointing_with_no_trainable_block_is_a_visible_skip() -> None:
    why = sweep.skip_reason(_mlp("all_but_head", "requires_grad", checkpoint="on"))
    assert why is not None and "all_but_head leaves none" in why


def test_checkpoint_wraps_the_trainable_blocks_only_and_comes_off() -> None:
    work = build_workload(_mlp("prefix", "no_grad", checkpoint="on"))
    assert checkpointed_blocks(work.plan) == [2, 3]
    wrapped = [i for i, m in enumerate(work.model.blocks) if "forward" in vars(m)]
    assert wrapped == [0, 1, 2, 3]  # 0, 1: no_grad's wrappers; 2, 3: the checkpoint's
    work.uninstall()
    assert not any("forward" in vars(b) for b in work.model.blocks)


# ---------------------------------------------------------------------------- compile


@pytest.mark.parametrize(
    ("pattern", "mechanism"),
    [("prefix", "requires_grad"), ("middle", "requires_grad"), ("middle", "no_grad")],
)
def test_a_compiled_case_gives_the_eager_verdict(
    late_freeze_compiled: dict[str, Any], pattern: str, mechanism: str
) -> None:
    eager = verify.check_case(_mlp(pattern, mechanism))
    compiled = _mlp(pattern, mechanism, compile="on")
    with compile_scope(compiled):
        work = build_workload(compiled)
        with CompileWatch(True) as watch:
            work.step()
        verdict = verify.check_case(compiled)
    assert verdict.verdict == eager.verdict
    assert watch.counts is not None and watch.counts.compiled_frames > 0


def test_a_late_freeze_recompiles_and_is_recorded(late_freeze_compiled: dict[str, Any]) -> None:
    r = late_freeze_compiled
    assert r["status"] == "ok", r["status_message"]
    assert (r["compiled_frames"], r["recompiles"], r["graph_breaks"]) == (2, 1, 0)
    assert r["compile_s"] is not None and r["compile_s"] >= 0
    assert r["axis_twin"] == "compile" and r["axis_twin_ratio"] > 0


def test_compiling_nothing_is_an_error() -> None:
    with pytest.raises(StepError, match="compiled no frame"):
        check_compiled(CompileCounts(0, 0, 0))


# ---------------------------------------------------------------------------- the wiring


@pytest.mark.parametrize(
    ("axes", "twin"),
    [
        ({"amp": "bf16"}, "amp"),
        ({"checkpoint": "on"}, "checkpoint"),
        ({"compile": "on"}, "compile"),
    ],
    ids=["amp", "checkpoint", "compile"],
)
def test_each_axis_end_to_end_leaves_nothing_behind(
    late_freeze_compiled: dict[str, Any], axes: dict[str, str], twin: str
) -> None:
    case = _mlp("middle", "requires_grad", **axes)
    # Once to settle: the fake tensors of earlier compiles (no memory) linger until a later
    # case lets them go, and the first use of each axis in the process keeps what it caches.
    runner.measure_case(case, TINY, _time_steps)
    before = _census()
    r = runner.measure_case(case, TINY, _time_steps)
    assert r["status"] == "ok", r["status_message"]
    assert {k: r[k] for k in ("amp", "compile", "checkpoint")} == {
        "amp": axes.get("amp", "none"),
        "compile": axes.get("compile", "off"),
        "checkpoint": axes.get("checkpoint", "off"),
    }
    assert r["axis_twin"] == twin and r["axis_twin_ratio"] > 0
    assert (r["compiled_frames"] is None) == (twin != "compile")
    assert (r["autocast_weight_bytes"] > 0) == (twin == "amp")
    assert r["foreign_bytes"] == 0
    after = _census()
    assert after == before, f"{case.id} left {after} vs {before}"


def test_an_eager_case_has_no_axis_fields() -> None:
    r = runner.measure_case(_mlp("prefix", "no_grad"), TINY, _time_steps)
    assert r["axis_twin"] is None and r["axis_twin_ratio"] is None
    assert r["compile_s"] is None and r["recompiles"] is None


# ---------------------------------------------------------------------------- the report


def _with_axes(tmp_path: Path) -> Path:
    """The CPU fixture plus copies of its d4 MLP prefix cases with each step axis set."""
    doc = json.loads((FIXTURES / "cpu_run.json").read_text(encoding="utf-8"))
    extra = []
    for b in doc["benchmarks"]:
        x = b["extra_info"]
        if not x["case_id"].startswith("mlp-d4-") or x["pattern"] not in ("none", "prefix"):
            continue
        for suffix, fields in (
            ("ckpt", {"checkpoint": "on", "axis_twin": "checkpoint", "axis_twin_ratio": 1.3}),
            ("compiled", {"compile": "on", "axis_twin": "compile", "axis_twin_ratio": 0.8,
                          "recompiles": int(x["mechanism"] == "requires_grad"),
                          "graph_breaks": 0, "compiled_frames": 1, "compile_s": 2.0}),
        ):  # fmt: skip
            new = copy.deepcopy(b)
            new_id = f"{x['case_id']}-{suffix}"
            new["name"] = new["param"] = new_id
            new["extra_info"].update(case_id=new_id, time_ratio=0.5, **fields)
            new["extra_info"]["saved_activation_bytes"] = x["saved_activation_bytes"] // 2
            extra.append(new)
    doc["benchmarks"] += extra
    path = tmp_path / "axes.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_step_axis_rows_stay_out_of_the_eager_findings(tmp_path: Path) -> None:
    findings()  # imports every finding into the registry
    plain = [load_run(str(FIXTURES / "cpu_run.json"))]
    mixed = [load_run(str(_with_axes(tmp_path)))]
    f0, f1 = facts(tidy(plain), plain), facts(tidy(mixed), mixed)
    for name in ("no_grad", "optimizer_only", "middle", "flops", "traps"):
        assert REGISTRY[name].headline(f0) == REGISTRY[name].headline(f1)
    assert family_pattern_table(f0) == family_pattern_table(f1)
    assert "not measured in this run" in REGISTRY["step_savings"].headline(f0)
    savings = REGISTRY["step_savings"].headline(f1)
    assert "checkpointed: 0.50× the baseline's time" in savings
    assert "compiled: 0.50×" in savings
    recompiles = REGISTRY["compile_recompiles"].headline(f1)
    assert "`requires_grad` recompiled in 1 of 1 case (1 recompile)" in recompiles
    assert "`no_grad`" in recompiles and "never did" in recompiles
    cost = REGISTRY["checkpoint_cost"].headline(f1)
    assert "nothing frozen 1.30× the step time for 0.50× the saved activations" in cost


# ---------------------------------------------------------------------------- failures


def test_a_compile_failure_is_the_case_s_error(
    late_freeze_compiled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.compile_fx as compile_fx

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected inductor failure")

    # Last in the module: the failed compile's fake tensors (no memory) stay with dynamo for a
    # while after the case, which the census above would count.
    monkeypatch.setattr(compile_fx, "compile_fx", broken)
    r = runner.measure_case(_mlp("prefix", "requires_grad", compile="on"), TINY, _time_steps)
    assert r["status"] == "error"
    assert r["verdict"] is None  # not the mechanism's error
    assert r["status_message"].startswith("compile failed: ")
    assert "injected inductor failure" in r["status_message"]


def test_hitting_the_recompile_limit_is_the_case_s_error(
    late_freeze_compiled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._dynamo

    # A limit of one compile per frame: the late freeze's recompile hits it.
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    r = runner.measure_case(_mlp("prefix", "late_freeze", compile="on"), TINY, _time_steps)
    assert r["status"] == "error"
    assert r["status_message"].startswith("compile failed: FailOnRecompileLimitHit")


# ---------------------------------------------------------------------------- the effects


def test_each_step_axis_has_one_discovered_effect() -> None:
    assert set(effects.REGISTRY) == {"amp", "compile", "checkpoint", "adapter"}
    assert all(effects.get_effect(name) is effects.REGISTRY[name] for name in effects.REGISTRY)
    assert [e.name for e in effects.active(_mlp("prefix", "no_grad"))] == []
    on = _mlp("prefix", "no_grad", amp="bf16", compile="on", checkpoint="on")
    # amp wraps first, compile last (it compiles the autocast too)
    assert [e.name for e in effects.active(on)] == ["amp", "checkpoint", "compile"]
    assert effects.axis_twin(on) == ("amp+compile+checkpoint", _mlp("prefix", "no_grad"))
    with pytest.raises(CaseError, match="axis='nope' has no effect; axes with one: adapter"):
        effects.get_effect("nope")


def test_an_axis_declared_elsewhere_finds_its_effect_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clip_effect.py").write_text(
        "from bench_lib.measuring.effects.base import Effect\n"
        "class Clip(Effect):\n    name = 'clip'\n    doc = 'clip gradients'\n"
        "CLIP = Clip()\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    clip = Axis("clip", "clip gradients", values=("off", "on"), role="step", effect="clip_effect")
    table = {**effects.axis_table(), "clip": clip}
    monkeypatch.setattr(effects, "axis_table", lambda: table)
    assert effects.get_effect("clip").name == "clip"
    table["clip"] = dataclasses.replace(clip, effect="bench_lib.measuring.effects.amp")
    with pytest.raises(CaseError, match="must define one Effect named 'clip'"):
        effects.get_effect("clip")


class _Recording(Effect):
    """An effect that does something no axis does, recording each hook it is asked."""

    name = "checkpoint"
    doc = "records its hooks"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def scope(self, case: Case) -> contextlib.AbstractContextManager[object]:
        self.calls.append("scope")
        return contextlib.nullcontext()

    def install(self, case: Case, plan: Any) -> Any:
        self.calls.append("install")
        return lambda: self.calls.append("uninstall")

    def wrap_forward_loss(self, case: Case, fn: Any, device: torch.device, *, eager: bool) -> Any:
        def doubled(*args: Any) -> torch.Tensor:
            self.calls.append("forward_loss")
            out: torch.Tensor = fn(*args) * 2
            return out

        return doubled

    def new_state(self, case: Case, device: torch.device) -> Any:
        return []

    def after_backward(self, state: Any, step: Any) -> None:
        state.append(step.steps)
        self.calls.append("after_backward")

    def watch_start(self, case: Case) -> Any:
        return "token"

    def watch_stop(self, token: Any) -> dict[str, Any]:
        return {"frames": 5}

    def watch_record(self, case: Case, ranks: Any, extra_s: float | None) -> dict[str, Any]:
        self.calls.append("watch_record")
        return {"graph_breaks": ranks[0]["frames"]}


def test_the_runner_applies_whatever_effect_an_axis_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``checkpoint`` axis given a different effect: the runner and the workload apply its
    hooks, record its watch and time its axis twin, with no knowledge of the axis."""
    fake = _Recording()
    monkeypatch.setitem(effects.REGISTRY, "checkpoint", fake)
    r = runner.measure_case(_mlp("prefix", "requires_grad", checkpoint="on"), TINY, _time_steps)
    assert r["status"] == "ok", r["status_message"]
    assert {"scope", "install", "forward_loss", "after_backward"} <= set(fake.calls)
    assert (
        r["graph_breaks"] == 5 and fake.calls.count("watch_record") == 2
    )  # the case and its baseline, timed together
    assert r["axis_twin"] == "checkpoint" and r["axis_twin_ratio"] > 0
    assert r["saved_activation_bytes"] > 0


def test_the_effects_skip_reason_is_the_adapter_s() -> None:
    assert effects.skip_reason(_mlp("prefix", "no_grad", checkpoint="on")) is None
    why = effects.skip_reason(_mlp("all_but_head", "no_grad", adapter="lora", lora_rank=2))
    assert why is not None and "hold no layer it adapts" in why


# ---------------------------------------------------------------------------- smoke mode


def test_smoke_mode_checks_times_two_steps_and_leaves_the_heavy_fields_null() -> None:
    timed: list[int] = []

    def time_steps(values: Sequence[float]) -> None:
        timed.append(len(values))
        _time_steps(values)

    smoke = Budget(smoke=True)
    r = runner.measure_case(_mlp("prefix", "requires_grad", compile="on"), smoke, time_steps)
    assert r["status"] == "ok", r["status_message"]
    assert r["verdict"] == "ok" and timed == [SMOKE_ROUNDS] and r["rounds"] == SMOKE_ROUNDS
    assert r["compiled_frames"] > 0 and r["compile_s"] is None  # no calibration: not measured
    assert 0 < r["ratio_pairs"] <= 2
    heavy = ("flops_forward", "forward_s", "peak_memory_bytes", "saved_activation_bytes")
    assert all(r[k] is None for k in (*heavy, "axis_twin", "axis_twin_ratio"))
    smoke_passes = {p.name for p in runner.PASSES if p.smoke}
    assert set(r["pass_seconds"]) == smoke_passes | {"launch", "group", "stop"}
