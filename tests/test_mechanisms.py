"""Tier 2: the mechanism registry, the forward wrappers of the module-level mechanisms, the freeze
plan, and a family whose blocks are not in sequence (a long skip connection)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import weakref
from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Sequence

import pytest
import torch
from torch import Tensor, nn

from bench_lib import axes as axis_table
from bench_lib.measuring import families
from bench_lib.measuring.families import FAMILIES
from bench_lib.measuring.families.base import Batch, BlockNames, Family, call_model
from bench_lib.measuring.mechanisms import REGISTRY, FreezePlan, get_mechanism
from bench_lib.measuring.mechanisms.context import clone_tensors, under_context, wrap_forward
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.training import build_workload
from bench_lib.measuring.verify import check_case
from bench_lib.vocab import MECHANISMS

SIZES = {
    "mlp": (8, 2, ()),
    "transformer": (16, 2, (("seq_len", 4),)),
    "cnn": (4, 2, (("image_size", 4),)),
    "xy": (16, 2, (("seq_len", 4),)),
}
MODULE_LEVEL = ("no_grad", "inference_mode", "inference_mode_nocopy")


def tiny(model: str, mechanism: str, pattern: str = "alternating", depth: int = 4) -> Case:
    width, batch, extra = SIZES[model]
    if mechanism == "none":
        pattern = "none"
    blocks = pattern_blocks(pattern, depth)
    return Case(model, depth, width, batch, pattern, blocks, mechanism, extra=extra)


def wrapped(model: nn.Module) -> set[str]:
    """Names of the modules whose forward is shadowed by an instance attribute."""
    return {name for name, m in model.named_modules() if "forward" in m.__dict__}


def test_registry_keys_are_the_mechanism_vocabulary():
    assert set(REGISTRY) == set(MECHANISMS)
    assert all(REGISTRY[name].name == name for name in MECHANISMS)
    with pytest.raises(CaseError, match="mechanism='freeze' is not one of: "):
        get_mechanism("freeze")


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("model", tuple(SIZES))  # the transformers families: test_real_models
def test_the_wrapped_model_computes_the_plain_models_output(model: str, mechanism: str):
    case = tiny(model, mechanism)
    w = build_workload(case)
    plain = families.build(case.baseline())
    plain.model.load_state_dict(w.model.state_dict())
    # requires_grad=False changes the kernels MultiheadAttention runs (the last bits of its
    # output): the plain twin gets the same flags, so that only the wrappers differ.
    for p, q in zip(plain.model.parameters(), w.model.parameters(), strict=True):
        p.requires_grad_(q.requires_grad)
    frozen_names = {n for i in case.frozen_blocks for n in w.built.blocks[i]}
    assert wrapped(w.model) == (frozen_names if mechanism in MODULE_LEVEL else set())
    with torch.no_grad():
        expected = call_model(plain.model, w.inputs)
        assert torch.equal(call_model(w.model, w.inputs), expected)
    # With grad enabled too (kernels may differ by grad mode: each side is compared in the
    # same one), except where a later op saves the uncopied inference tensor: the trap raises
    # then, as its verdict shows.
    if mechanism != "inference_mode_nocopy":
        out = call_model(w.model, w.inputs)
        assert torch.equal(out, call_model(plain.model, w.inputs))
    w.uninstall()
    assert wrapped(w.model) == set()
    with torch.no_grad():
        assert torch.equal(call_model(w.model, w.inputs), expected)


def test_uninstall_restores_the_plain_forward_and_its_gradients():
    w = build_workload(tiny("mlp", "no_grad", "middle", depth=3))
    first = w.model.get_submodule("blocks.0.0")
    w.forward_loss().backward()
    assert first.weight.grad is None  # the graph is cut at block 1
    w.uninstall()
    w.uninstall()  # a second call does nothing
    w.forward_loss().backward()
    assert first.weight.grad is not None and bool(first.weight.grad.any())


def test_wrappers_nest_and_come_off_in_reverse_order():
    lin = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    inner = wrap_forward(lin, under_context(torch.no_grad, lambda out: out * 2))
    outer = wrap_forward(lin, under_context(contextlib.nullcontext, lambda out: out + 1))
    assert torch.equal(lin(x), (nn.Linear.forward(lin, x) * 2 + 1).detach())
    assert not lin(x).requires_grad
    with pytest.raises(RuntimeError, match="wrapped again after this wrapper"):
        inner()
    # the refused removal left both wrappers in place
    assert torch.equal(lin(x), (nn.Linear.forward(lin, x) * 2 + 1).detach())
    outer()
    inner()
    assert "forward" not in lin.__dict__ and lin(x).requires_grad


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("mechanism", MODULE_LEVEL)
def test_wrappers_form_no_reference_cycle(mechanism: str):
    # Warm up torch's lazy one-time state (the optimizer's first step keeps a first model).
    build_workload(tiny("mlp", "none")).step()
    with gc_disabled():
        w = build_workload(tiny("mlp", mechanism, "prefix"))
        with torch.no_grad():
            w.forward_loss()
        modules = [weakref.ref(m) for m in w.model.modules()]
        del w
        alive = [type(m()).__name__ for m in modules if m() is not None]
        assert not alive, "modules outlived their workload without the garbage collector"


@pytest.mark.parametrize(
    ("mechanism", "is_inference"), [("inference_mode", False), ("inference_mode_nocopy", True)]
)
def test_inference_mode_clones_each_frozen_blocks_output(mechanism: str, is_inference: bool):
    w = build_workload(tiny("mlp", mechanism, "prefix"))  # blocks 0 and 1 in a row
    outputs: list[Tensor] = []
    for i in (0, 1):
        w.model.get_submodule(f"blocks.{i}").register_forward_hook(
            lambda m, args, out: outputs.append(out)
        )
    with torch.no_grad():
        w.forward_loss()
    assert [t.is_inference() for t in outputs] == [is_inference, is_inference]


class _Output(OrderedDict[str, Tensor]):
    """Like transformers' ModelOutput: a dict whose keys are also attributes."""

    @property
    def logits(self) -> Tensor:
        return self["logits"]


def test_clone_tensors_walks_tuples_dicts_and_model_outputs():
    a, b = torch.randn(2), torch.randn(3)
    Pair = namedtuple("Pair", "first second")
    tree = (a, [b, 3], {"x": a}, Pair(a, None), _Output(logits=b))
    out = clone_tensors(tree)
    assert type(out) is tuple and type(out[1]) is list and type(out[3]) is Pair
    assert type(out[4]) is _Output and torch.equal(out[4].logits, b)
    assert out[1][1] == 3 and out[3].second is None
    leaves = [out[0], out[1][0], out[2]["x"], out[3].first, out[4]["logits"]]
    for clone, orig in zip(leaves, [a, b, a, a, b], strict=True):
        assert torch.equal(clone, orig) and clone.data_ptr() != orig.data_ptr()


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4, 3)
        self.block = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        self.out = nn.Linear(3, 4, bias=False)
        self.block[0].weight = self.out.weight = nn.Parameter(torch.randn(3, 3))


def test_freeze_plan_owns_tied_parameters_and_leaves_the_rest_trainable():
    model = _Tied()
    plan = FreezePlan(model, (("block",),), frozenset({0}))
    weight, bias = model.block[0].weight, model.block[0].bias
    assert [id(p) for p in plan.frozen_params()] == [
        id(weight),
        id(bias),
        *map(id, model.block[1].parameters()),
    ]
    # The tied weight is frozen with its block, though the output layer uses it too.
    assert {id(p) for p in plan.trainable_params()} == {id(model.embed.weight)}
    assert [n for n, _ in plan.frozen_buffers()] == [
        "block.1.running_mean",
        "block.1.running_var",
        "block.1.num_batches_tracked",
    ]
    plan.set_mode("eval")
    assert not model.block.training and model.training and model.out.training
    with pytest.raises(CaseError, match="index 1 is out of range for a model of 1 blocks"):
        FreezePlan(model, (("block",),), frozenset({1}))


class _SkipNet(nn.Module):
    """U-Net-like: a stem outside the blocks, then down -> mid -> up, and the head reads
    ``up(mid(h)) + h``: block 0 reaches the loss around blocks 1 and 2 as well as through them."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Linear(width, width)
        self.down = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.up = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = self.down(self.stem(x))
        out: Tensor = self.head(self.up(self.mid(h)) + h)
        return out


class _Skip(Family):
    name = "skip"

    def num_blocks(self, case: Case) -> int:
        return 3

    def model(self, case: Case) -> nn.Module:
        return _SkipNet(case.width)

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        return ["down", ("mid.0", "mid.1"), "up"]

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        x = torch.randn((case.batch_size, case.width), generator=gen)
        return x, torch.randint(0, 10, (case.batch_size,), generator=gen)


@pytest.fixture
def skip_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-only family 'skip', registered for this test only."""
    model = axis_table.AXES["model"]
    skip_model = dataclasses.replace(model, values=(*model.values, "skip"))
    monkeypatch.setitem(axis_table.AXES, "model", skip_model)
    monkeypatch.setitem(FAMILIES, "skip", _Skip())


@pytest.mark.usefixtures("skip_family")
@pytest.mark.parametrize(
    ("pattern", "mechanism", "verdict", "detail"),
    [
        ("middle", "no_grad", "grad_mismatch", "trainable gradients differ from the reference"),
        ("middle", "inference_mode", "grad_mismatch", "max relative error"),
        ("middle", "requires_grad", "ok", "match the reference exactly"),
        ("middle", "optimizer_only", "ok", ""),
        ("middle", "backward_inputs", "ok", ""),
        (
            "prefix",
            "no_grad",
            "graph_cut",
            "2 of 8 trainable parameter tensors (72 elements, outside the blocks (head)) received",
        ),
        ("prefix", "requires_grad", "ok", ""),
    ],
)
def test_a_skip_connection_around_a_frozen_block(
    pattern: str, mechanism: str, verdict: str, detail: str
):
    # The no_grad block in the middle starves block 0 and the stem of the gradient through
    # it, not of the one around it: the gradient is partial, not absent.
    case = Case("skip", 3, 8, 4, pattern, pattern_blocks(pattern, 3), mechanism)
    v = check_case(case)
    assert v.verdict == verdict, v.detail
    assert detail in v.detail
