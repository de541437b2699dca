"""Tier 1-2: the family registry, the built-in families (numbers unchanged by the port), and the
family interface (block names, batches of tensors, tuples or keywords, the default loss)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from bench_lib import axes as axis_table
from bench_lib.measuring import families
from bench_lib.measuring.families import FAMILIES, family_size, get_family
from bench_lib.measuring.families.base import (
    Batch,
    BlockNames,
    Family,
    call_model,
    default_loss,
    inputs_to,
)
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.training import build_workload
from bench_lib.vocab import MODELS

TINY = {
    "mlp": Case("mlp", 3, 8, 4),
    "transformer": Case("transformer", 2, 16, 2, extra=(("seq_len", 4),)),
    "cnn": Case("cnn", 2, 4, 2, extra=(("image_size", 4),)),
    "xy": Case("xy", 3, 16, 2, extra=(("seq_len", 4),)),
}


def test_registry_keys_are_the_model_vocabulary():
    assert set(FAMILIES) == set(MODELS)
    assert all(FAMILIES[name].name == name for name in MODELS)
    with pytest.raises(CaseError, match="model='rnn' is not one of: "):
        get_family("rnn")


# Sum of every parameter, sum of the batch inputs, the targets and the first loss, as the
# models.py of the first version gave them: seeding, init and batches are unchanged.
BEFORE_THE_PORT = {
    "mlp": (-5.450871274922974, -11.070976704359055, [7, 3, 7, 3], 2.289731502532959),
    "transformer": (54.179606270365184, -8.461437265388668, [2, 1], 2.452166795730591),
    "cnn": (4.309667745576007, -14.785556418821216, [7, 7], 2.5568482875823975),
    "xy": (24.600931085733464, -8.461437265388668, [2, 1], 2.2988133430480957),
}


@pytest.mark.parametrize("model", tuple(TINY))
def test_builtin_families_give_the_numbers_of_before_the_port(model: str):
    w = build_workload(TINY[model])
    assert isinstance(w.inputs, Tensor)
    param_sum = sum(float(p.detach().double().sum()) for p in w.model.parameters())
    param, inputs, targets, loss = BEFORE_THE_PORT[model]
    assert param_sum == pytest.approx(param, rel=1e-6)
    assert float(w.inputs.double().sum()) == pytest.approx(inputs, rel=1e-6)
    assert w.targets.tolist() == targets
    assert float(w.forward_loss().detach()) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("model", tuple(TINY))
def test_builtin_blocks_are_the_stack_in_order(model: str):
    built = families.build(TINY[model])
    assert built.blocks == tuple((f"blocks.{i}",) for i in range(TINY[model].depth))
    assert get_family(model).num_blocks(TINY[model]) == len(built.blocks)
    assert built.model.training


def test_family_sizes_come_from_extra_with_defaults():
    assert family_size(Case("transformer", 2, 16, 2), "seq_len") == 32
    assert family_size(TINY["transformer"], "seq_len") == 4
    assert family_size(TINY["cnn"], "image_size") == 4
    assert family_size(Case("cnn", 2, 4, 2), "image_size") == 16
    assert family_size(TINY["mlp"], "seq_len") is None
    assert family_size(TINY["cnn"], "seq_len") is None
    with pytest.raises(KeyError, match="model 'mlp' has no size 'seq_len'"):
        get_family("mlp").size(TINY["mlp"], "seq_len")


def test_xy_needs_x_and_y():
    with pytest.raises(ValueError, match="needs depth >= 2"):
        families.build(Case("xy", 1, 16, 2))


class _KeywordNet(nn.Module):
    """Takes keyword inputs: float features and integer ids; two blocks and a norm after them."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.enc = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
        self.norm = nn.LayerNorm(4)

    def forward(self, x: Tensor, ids: Tensor) -> SimpleNamespace:
        h = self.enc["b"](self.enc["a"](x + self.embed(ids)))
        return SimpleNamespace(logits=self.norm(h))


class _Keyword(Family):
    name = "keyword"

    def __init__(self, blocks: Sequence[BlockNames] = ("enc.a", ["enc.b"])) -> None:
        self._blocks = blocks

    def num_blocks(self, case: Case) -> int:
        return 2

    def model(self, case: Case) -> nn.Module:
        return _KeywordNet()

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        return self._blocks

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        x = torch.randn((case.batch_size, 4), generator=gen)
        ids = torch.randint(0, 5, (case.batch_size,), generator=gen)
        return {"x": x, "ids": ids}, torch.randint(0, 4, (case.batch_size,), generator=gen)


@pytest.fixture
def keyword(monkeypatch: pytest.MonkeyPatch) -> _Keyword:
    """The test-only family 'keyword', registered for this test only."""
    family = _Keyword()
    model = axis_table.AXES["model"]
    monkeypatch.setitem(
        axis_table.AXES, "model", dataclasses.replace(model, values=(*model.values, family.name))
    )
    monkeypatch.setitem(FAMILIES, family.name, family)
    return family


def test_a_family_with_keyword_inputs_and_named_blocks_runs_a_step(keyword: _Keyword):
    case = Case("keyword", 2, 4, 3, "prefix", (0,), "requires_grad", dtype="bfloat16")
    w = build_workload(case)
    assert w.built.blocks == (("enc.a",), ("enc.b",))
    assert isinstance(w.inputs, dict)
    assert w.inputs["x"].dtype == torch.bfloat16 and w.inputs["ids"].dtype == torch.int64
    enc_a = w.model.get_submodule("enc.a")
    assert {id(p) for p in w.frozen_params} == {id(p) for p in enc_a.parameters()}
    # The embedding before the blocks and the norm after them train.
    assert len(w.trainable_intended) == 1 + 2 + 2
    w.step()
    assert all(p.grad is None for p in enc_a.parameters())


@pytest.mark.parametrize(
    ("blocks", "error", "message"),
    [
        (["enc.a", "enc.c"], AttributeError, "has no attribute `c`"),
        (["enc.a", ["enc.b", "enc.a"]], ValueError, "names submodule 'enc.a' in two blocks"),
        (["enc.a", []], ValueError, "has an empty block"),
        (["enc.a"], ValueError, "gave 1 blocks for 2"),
    ],
)
def test_build_checks_the_blocks(
    keyword: _Keyword, blocks: list[BlockNames], error: type[Exception], message: str
):
    keyword._blocks = blocks
    with pytest.raises(error, match=message):
        families.build(Case("keyword", 2, 4, 3))


def test_inputs_move_and_cast_floats_only():
    x, ids = torch.randn(2, 3), torch.arange(2)
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    assert inputs_to(x, cpu, bf16).dtype == bf16
    moved = inputs_to((x, ids), cpu, bf16)
    assert isinstance(moved, tuple) and [t.dtype for t in moved] == [bf16, torch.int64]
    kw = inputs_to({"x": x, "ids": ids}, cpu, bf16)
    assert isinstance(kw, dict) and kw["ids"].dtype == torch.int64


def test_call_model_passes_tensor_tuple_and_keyword_inputs():
    class Args(nn.Module):
        def forward(self, a: Tensor, b: Tensor | None = None) -> Tensor:
            return a if b is None else a - b

    m, a, b = Args(), torch.ones(2), torch.full((2,), 3.0)
    assert torch.equal(call_model(m, a), a)
    assert torch.equal(call_model(m, (a, b)), a - b)
    assert torch.equal(call_model(m, {"b": a, "a": b}), b - a)


def test_default_loss_reads_logits_and_flattens_sequences():
    logits = torch.randn(4, 10)
    targets = torch.randint(0, 10, (4,))
    expected = nn.functional.cross_entropy(logits, targets)
    assert torch.equal(default_loss(logits, targets), expected)
    assert torch.equal(default_loss(SimpleNamespace(logits=logits), targets), expected)
    seq = torch.randn(2, 3, 10)
    seq_targets = torch.randint(0, 10, (2, 3))
    by_token = nn.functional.cross_entropy(seq.reshape(6, 10), seq_targets.reshape(6))
    assert torch.equal(default_loss(seq, seq_targets), by_token)
    assert default_loss(seq.bfloat16(), seq_targets).dtype == torch.float32
