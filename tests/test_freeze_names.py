"""Tier 1-2: freezing by parameter name (pattern ``names``, ``--bench-freeze``): what the globs
match, which modules the module-level mechanisms wrap, what parameter-level mechanisms freeze,
the skips and errors at plan time, and the record's counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench_lib.measuring.mechanisms import FreezePlan, get_mechanism
from bench_lib.measuring.mechanisms.base import match_names
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import PROFILES, Filters, generate
from bench_lib.measuring.training import build_workload, freeze_summary
from bench_lib.measuring.verify import check_case


def names_case(mechanism: str, *globs: str, model: str = "mlp") -> Case:
    return Case(model, 3, 8, 4, "names", mechanism=mechanism, freeze=globs)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.norm = nn.LayerNorm(2)
        self.head = nn.Linear(2, 3)


def test_globs_match_names_and_the_largest_fully_matched_modules():
    m = match_names(_Net(), ["body.*"])
    assert m.names == ("body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias")
    # The ModuleList has no forward of its own (it is never called): its children are wrapped.
    assert m.modules == ("body.0", "body.1") and m.uncovered == ()
    m = match_names(_Net(), ["*.bias", "norm.weight"])
    assert m.modules == ("norm",)
    assert m.uncovered == ("body.0.bias", "body.1.bias", "head.bias")


@pytest.mark.parametrize(
    ("globs", "message"),
    [
        (["body.*", "neck.*"], "glob 'neck.*' matches no parameter name of _Net"),
        (["*"], "--bench-freeze='*' matches every parameter of _Net: nothing would train"),
        (["*.weight", "*.bias"], "matches every parameter"),
    ],
)
def test_globs_that_match_nothing_or_everything_are_errors(globs: list[str], message: str):
    with pytest.raises(CaseError, match=message.replace("*", r"\*").replace("(", r"\(")):
        match_names(_Net(), globs)


@pytest.mark.parametrize("mechanism", ["requires_grad", "optimizer_only", "backward_inputs"])
def test_parameter_level_mechanisms_freeze_exactly_the_matched_parameters(mechanism: str):
    w = build_workload(names_case(mechanism, "*.bias"))
    biases = {id(p) for n, p in w.model.named_parameters() if n.endswith(".bias")}
    assert {id(p) for p in w.frozen_params} == biases
    assert {id(p) for p in w.trainable} == {id(p) for p in w.model.parameters()} - biases
    if mechanism == "requires_grad":
        assert {id(p) for p in w.model.parameters() if not p.requires_grad} == biases
    assert check_case(w.case).verdict == "ok"


def test_module_level_mechanisms_wrap_the_fully_matched_modules():
    w = build_workload(names_case("no_grad", "blocks.0.*"))
    wrapped = {n for n, m in w.model.named_modules() if "forward" in m.__dict__}
    assert wrapped == {"blocks.0"}  # the Sequential, not its Linear and ReLU separately
    assert check_case(w.case).verdict == "ok"  # a frozen prefix by name
    assert check_case(names_case("no_grad", "blocks.1.*")).verdict == "graph_cut"


def test_a_module_level_mechanism_cannot_freeze_what_no_module_covers():
    with pytest.raises(CaseError, match=r"no_grad acts on whole modules, and 4 matched"):
        build_workload(names_case("no_grad", "*.bias"))
    # At plan time it is a visible skip naming them; requires_grad runs.
    sweep = generate(
        PROFILES["quick"],
        Filters(models=("mlp",), optimizers=("adamw",), freeze=("*.bias",),
                mechanisms=("no_grad", "requires_grad"), adapters=("none",), compiles=("off",),
                parallel=("none",)),
    )  # fmt: skip
    names = [c for c in sweep.cases if c.pattern == "names"]
    assert [c.mechanism for c in names] == ["requires_grad"]
    (skip,) = [s for s in sweep.skips if "names-no_grad" in s.id]
    assert "blocks.0.0.bias, blocks.1.0.bias, blocks.2.0.bias, blocks.3.0.bias" in skip.reason


def test_bench_freeze_adds_pattern_names():
    f = Filters(models=("mlp",), optimizers=("adamw",), freeze=("head.*",), mechanisms=("no_grad",),
                adapters=("none",), compiles=("off",), parallel=("none",))  # fmt: skip
    ids = [c.id for c in generate(PROFILES["quick"], f).cases]
    assert ids == [
        "mlp-d4-w64-b16-none-none-adamw-cpu-float32",
        "mlp-d4-w64-b16-names-no_grad-adamw-cpu-float32",
    ]
    both = f.replace(patterns=("prefix",))
    assert [c.pattern for c in generate(PROFILES["quick"], both).cases] == ["prefix", "names"]
    with pytest.raises(CaseError, match="pattern 'names' needs --bench-freeze"):
        Filters(patterns=("names",))


def test_a_glob_matching_only_some_models_skips_the_others():
    f = Filters(models=("mlp", "cnn"), optimizers=("adamw",), freeze=("blocks.0.0.weight",),
                mechanisms=("requires_grad",))  # fmt: skip
    sweep = generate(PROFILES["quick"], f)
    assert {c.model for c in sweep.cases if c.pattern == "names"} == {"mlp", "cnn"}
    f = Filters(models=("mlp", "cnn"), optimizers=("adamw",), freeze=("blocks.0.1.weight",),
                mechanisms=("requires_grad",))  # fmt: skip
    sweep = generate(PROFILES["quick"], f)  # the MLP's block is Linear + ReLU: no .1.weight
    assert {c.model for c in sweep.cases if c.pattern == "names"} == {"cnn"}
    assert any("matches no parameter name of Stack" in s.reason for s in sweep.skips)
    with pytest.raises(CaseError, match="glob 'nothing' matches no parameter name"):
        generate(PROFILES["quick"], Filters(models=("mlp",), freeze=("nothing",)))


def test_the_record_counts_frozen_names_and_modules():
    summary = freeze_summary(names_case("inference_mode", "blocks.0.*", "blocks.2.0.weight"))
    # blocks.2.0's bias is not matched, so blocks.2.0 is not a frozen module (its weight is
    # uncovered, which makes the case a skip at plan time).
    assert summary == {
        "n_blocks": 3,
        "frozen_param_names": 3,
        "frozen_modules": ["blocks.0"],
        "tied_frozen": 0,
    }
    assert freeze_summary(names_case("requires_grad", "blocks.0.*"))["frozen_modules"] is None
    blocks = freeze_summary(Case("mlp", 3, 8, 4, "prefix", (0,), "no_grad"))
    assert blocks == {
        "n_blocks": 3,
        "frozen_param_names": 2,
        "frozen_modules": ["blocks.0"],
        "tied_frozen": 0,
    }


def test_freeze_plan_with_globs_freezes_buffers_of_the_matched_modules_only():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.BatchNorm1d(2))
    plan = FreezePlan(model, (("0",), ("1",), ("2",)), frozenset(), ("1.*", "2.weight"))
    assert [n for n, _ in plan.frozen_modules()] == ["1"]
    assert [n for n, _ in plan.frozen_buffers()] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert plan.uncovered() == ("2.weight",)
    assert get_mechanism("no_grad").module_level and not get_mechanism("late_freeze").module_level
    plan.set_mode("eval")
    assert not model[1].training and model[2].training
    assert torch.equal(plan.frozen_params()[0], model[1].weight)
