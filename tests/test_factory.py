"""Tier 2: your own model through ``--bench-model-factory``: the example factory and its
verdicts, both return forms, module and path specs, a case rebuilt from its dict alone, and the
errors a broken factory gives at plan time.

The functions at the top are factories the tests (and tests/test_pytest_wiring.py, by path)
call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bench_lib.measuring.families import FAMILIES, build
from bench_lib.measuring.families.factory import ModelSpec, load_factory
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import EXAMPLE_FACTORY, PROFILES, Filters, generate
from bench_lib.measuring.training import build_workload
from bench_lib.measuring.verify import check_case

HERE = Path(__file__).resolve()


def two_tower(depth: int, width: int) -> ModelSpec:
    """Two towers fed keyword inputs, fused by the head; returns a ModelSpec."""

    class Towers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
            self.b = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
            self.head = nn.Linear(2 * width, 3)

        def forward(self, left: Tensor, right: Tensor) -> Tensor:
            out: Tensor = self.head(torch.cat([self.a(left), self.b(right)], dim=1))
            return out

    def make_batch(gen: torch.Generator) -> tuple[dict[str, Tensor], Tensor]:
        x = {k: torch.randn((4, width), generator=gen) for k in ("left", "right")}
        return x, torch.randint(0, 3, (4,), generator=gen)

    blocks = [f"a.{i}" for i in range(depth)] + [[f"b.{i}"] for i in range(depth)]
    return ModelSpec(Towers(), blocks, make_batch)


def bad_block(**sizes: int) -> dict[str, Any]:
    """Names a block the model does not have."""
    return {"model": nn.Linear(2, 2), "blocks": ["encoder"], "make_batch": lambda g: None}


def wrong_shape(**sizes: int) -> list[nn.Module]:
    return [nn.Linear(2, 2)]


def raises(**sizes: int) -> dict[str, Any]:
    raise RuntimeError("no GPU in this factory")


@pytest.fixture
def fresh_factories() -> Iterator[None]:
    """Forget loaded factories and their cached results around a test."""
    load_factory.cache_clear()
    yield
    load_factory.cache_clear()


def case(pattern: str, mechanism: str, spec: str = EXAMPLE_FACTORY, depth: int = 2) -> Case:
    base = Case("factory", depth, 4, 2, factory=spec, extra=(("image_size", 8),))
    blocks = pattern_blocks(pattern, base.n_blocks)
    return Case("factory", depth, 4, 2, pattern, blocks, mechanism, factory=spec,
                extra=(("image_size", 8),))  # fmt: skip


def test_the_example_factory_runs_in_quick_and_names_itself():
    cases = generate(PROFILES["quick"], Filters(models=("factory",))).cases
    assert {c.factory for c in cases} == {EXAMPLE_FACTORY}
    assert (
        cases[0].id
        == "factory:benchmarks.example_factory.build-d2-w8-b2-none-none-adamw-cpu-float32"
    )
    assert cases[0].n_blocks == 5  # enc.0, enc.1, mid, dec.1, dec.0


@pytest.mark.parametrize(
    ("pattern", "mechanism", "verdict"),
    [
        ("prefix", "no_grad", "ok"),  # the encoder: its skips need no gradient
        ("middle", "no_grad", "grad_mismatch"),  # the bottleneck: a partial gradient, not none
        ("middle", "requires_grad", "ok"),
    ],
)
def test_the_example_unets_verdicts(pattern: str, mechanism: str, verdict: str):
    assert check_case(case(pattern, mechanism)).verdict == verdict


def test_a_path_factory_returning_a_model_spec_with_keyword_inputs(fresh_factories: None):
    spec = f"{HERE}:two_tower"
    c = case("prefix", "no_grad", spec)
    assert c.id.startswith("factory:test_factory.two_tower-d2-")
    assert c.n_blocks == 4 and c.frozen_blocks == (0, 1)  # tower a, which feeds only the head
    assert check_case(c).verdict == "ok"
    w = build_workload(c)
    assert isinstance(w.inputs, dict) and set(w.inputs) == {"left", "right"}
    assert w.built.blocks[2] == ("b.0",)
    w.step()


def test_a_case_rebuilds_from_its_dict_alone(fresh_factories: None):
    c = case("prefix", "requires_grad", f"{HERE}:two_tower")
    first = [p.detach().clone() for p in build(c).model.parameters()]
    load_factory.cache_clear()
    FAMILIES["factory"].__init__()  # type: ignore[misc]  # forget every cached call
    sys.modules.pop("freeze_bench_factory_test_factory", None)
    again = Case.from_dict(c.to_dict())
    assert again == c
    rebuilt = [p.detach() for p in build(again).model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(first, rebuilt, strict=True))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module:build", "cannot import 'no_such_module': ModuleNotFoundError"),
        ("missing/file.py:build", "cannot import 'missing/file.py': FileNotFoundError"),
        ("benchmarks.example_factory:nothing", "has no function 'nothing'"),
        ("build", "give MODULE:FUNCTION"),
        (f"{HERE}:raises", "the factory raised RuntimeError: no GPU in this factory"),
        (f"{HERE}:wrong_shape", "returned list, not a ModelSpec or a mapping"),
        (f"{HERE}:bad_block", "block 'encoder' is not a submodule of the model"),
    ],
)
def test_a_broken_factory_is_a_case_error_naming_it(fresh_factories: None, spec: str, message: str):
    with pytest.raises(CaseError, match=f"--bench-model-factory={spec!r}: ".replace(".", r"\.")):
        Case("factory", 2, 4, 2, factory=spec)
    with pytest.raises(CaseError, match=message.replace("(", r"\(")):
        generate(PROFILES["default"], Filters(factory=spec))


def test_a_factory_is_only_called_with_the_sizes_it_takes():
    c = Case("factory", 3, 4, 2, factory=f"{HERE}:two_tower")
    assert c.n_blocks == 6  # two_tower takes depth and width only
    with pytest.raises(CaseError, match="model 'factory' needs a factory"):
        Case("factory", 3, 4, 2)
    with pytest.raises(CaseError, match="needs --bench-model-factory"):
        generate(PROFILES["default"], Filters(models=("factory",)))
    # The other profiles' factory grids run a given factory, and only it by default.
    cases = generate(PROFILES["default"], Filters(factory=EXAMPLE_FACTORY)).cases
    assert {c.model for c in cases} == {"factory"} and len(cases) == 1 + 5 * 5
