"""Tier 2: the transformers families (ResNet, ViT, BERT, GPT-2) at tiny sizes: block counts from
the sizes alone, verdicts that stay right on real architectures (BatchNorm, tied weights,
keyword inputs), complete FLOP counts, and a visible skip where transformers is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench_lib.measuring import families
from bench_lib.measuring import flops as cost
from bench_lib.measuring.families import get_family
from bench_lib.measuring.families.hf import resnet_stage_depths
from bench_lib.measuring.patterns import pattern_blocks
from bench_lib.measuring.spec import Case
from bench_lib.measuring.training import build_workload, freeze_summary
from bench_lib.measuring.verify import check_case

pytest.importorskip("transformers", reason='the models extra: pip install -e ".[models]"')

ROOT = Path(__file__).resolve().parents[1]
HF = ("resnet", "vit", "bert", "gpt2")
SIZES = {
    "resnet": (8, (("image_size", 32),)),
    "vit": (32, (("image_size", 16), ("patch_size", 4))),
    "bert": (32, (("seq_len", 8),)),
    "gpt2": (32, (("seq_len", 8), ("vocab_size", 64))),
    "factory": (4, (("image_size", 8),)),
}
MAIN = ("no_grad", "inference_mode", "requires_grad", "optimizer_only", "backward_inputs")


def tiny(model: str, pattern: str = "none", mechanism: str = "none", **kw: object) -> Case:
    width, extra = SIZES[model]
    factory = "benchmarks.example_factory:build" if model == "factory" else ""
    base = Case(model, 2, width, 2, extra=extra, factory=factory)
    blocks = pattern_blocks(pattern, base.n_blocks) if pattern != "none" else ()
    return Case(model, 2, width, 2, pattern, blocks, mechanism, extra=extra, factory=factory, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", HF)
def test_blocks_are_the_input_stage_then_every_layer(model: str):
    case = tiny(model)
    assert case.n_blocks == case.depth + 1  # from the sizes, before any model is built
    built = families.build(case, meta=True)
    assert len(built.blocks) == case.n_blocks
    assert all(p.is_meta for p in built.model.parameters())
    first = {
        "resnet": ("resnet.embedder",),
        "vit": ("vit.embeddings",),
        "bert": ("bert.embeddings",),
        "gpt2": ("transformer.wte", "transformer.wpe"),
    }
    assert built.blocks[0] == first[model]


def test_resnet_layers_follow_resnet50s_proportions():
    assert resnet_stage_depths(16) == (3, 4, 6, 3)
    assert resnet_stage_depths(2) == (1, 1)
    assert resnet_stage_depths(4) == (1, 1, 1, 1)
    assert [sum(resnet_stage_depths(d)) for d in range(1, 40)] == list(range(1, 40))
    model = families.build(Case("resnet", 16, 64, 2, extra=(("image_size", 224),)), meta=True)
    params = sum(p.numel() for p in model.model.parameters())
    assert params == 23_528_522  # ResNet-50 with a 10-class head (25.6M with 1000 classes)


@pytest.mark.parametrize("mechanism", ["no_grad", "requires_grad", "inference_mode"])
def test_bert_prefix_is_valid_and_a_middle_layer_under_no_grad_is_not(mechanism: str):
    case = tiny("bert", "prefix", mechanism)
    assert case.frozen_blocks == (0,)  # the embeddings of 3 blocks
    assert check_case(case).verdict == "ok"
    w = build_workload(case)
    assert isinstance(w.inputs, dict) and set(w.inputs) == {"input_ids", "attention_mask"}
    middle = check_case(tiny("bert", "middle", "no_grad"))
    assert middle.verdict == "graph_cut" and "block 0" in middle.detail


@pytest.mark.parametrize("mechanism", MAIN)
def test_resnet_frozen_in_train_mode_changes_batchnorm_buffers_and_eval_fixes_it(mechanism: str):
    train = check_case(tiny("resnet", "prefix", mechanism))
    assert train.verdict == "frozen_buffer_changed", train.detail
    assert "resnet.embedder.embedder.normalization.running_mean" in train.detail
    assert check_case(tiny("resnet", "prefix", mechanism, frozen_mode="eval")).verdict == "ok"


@pytest.mark.parametrize("mechanism", MAIN)
def test_gpt2_frozen_embeddings_freeze_the_tied_lm_head(mechanism: str):
    case = tiny("gpt2", "prefix", mechanism)
    w = build_workload(case)
    head, wte = w.model.get_submodule("lm_head"), w.model.get_submodule("transformer.wte")
    assert head.weight is wte.weight
    assert any(p is head.weight for p in w.frozen_params)
    assert all(p is not head.weight for p in w.trainable)
    assert freeze_summary(case)["tied_frozen"] == 1
    verdict = check_case(case)
    assert verdict.verdict == "ok", verdict.detail  # the shared weight stayed bit-identical
    w.step()
    # Under no_grad (and optimizer_only) the head still computes the shared weight's gradient,
    # which the step pays for and holds; requires_grad and backward(inputs=) skip it.
    expects_grad = mechanism in ("no_grad", "inference_mode", "optimizer_only")
    assert (wte.weight.grad is not None) == expects_grad


def test_gpt2_loss_is_the_shifted_causal_lm_loss():
    w = build_workload(tiny("gpt2"))
    assert isinstance(w.inputs, dict)
    logits = w.model(**w.inputs).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), w.targets[:, 1:].reshape(-1)
    )
    assert torch.allclose(w.forward_loss(), expected)


@pytest.mark.parametrize("model", [*HF, "factory"])
def test_flops_are_counted_completely(model: str):
    w = build_workload(tiny(model))
    flops = cost.count_step_flops(w)
    assert flops.uncounted_ops == ()
    assert flops.forward > 0 and flops.backward > flops.forward


def test_every_family_is_dropout_free():
    for model in HF:
        built = families.build(tiny(model), meta=True)
        rates = [m.p for m in built.model.modules() if isinstance(m, torch.nn.Dropout)]
        assert all(p == 0 for p in rates), model
        assert get_family(model).unavailable() is None


def test_without_transformers_the_families_are_visible_skips():
    code = (
        "import json, sys\n"
        "sys.modules['transformers'] = None  # as if it were not installed\n"
        "from bench_lib.measuring.sweep import PROFILES, Filters, generate\n"
        "from bench_lib.measuring.training import build_workload\n"
        "from bench_lib.measuring.spec import Case\n"
        "sweep = generate(PROFILES['quick'], Filters(models=('mlp', 'bert')))\n"
        "build_workload(Case('mlp', 2, 8, 2)).step()\n"
        "print(json.dumps({'cases': sorted({c.model for c in sweep.cases}),\n"
        "  'skips': [s.reason for s in sweep.skips]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["cases"] == ["mlp"]
    assert len(result["skips"]) == 4
    assert all('pip install -e ".[models]"' in r for r in result["skips"])


@pytest.mark.parametrize("mechanism", ["no_grad", "inference_mode", "requires_grad"])
@pytest.mark.parametrize("model", HF)
def test_the_wrapped_model_computes_the_plain_models_output(model: str, mechanism: str):
    case = tiny(model, "alternating", mechanism)
    w = build_workload(case)
    plain = families.build(case.baseline())
    plain.model.load_state_dict(w.model.state_dict())
    for p, q in zip(plain.model.parameters(), w.model.parameters(), strict=True):
        p.requires_grad_(q.requires_grad)
    wrapped = {n for n, m in w.model.named_modules() if "forward" in m.__dict__}
    frozen = {n for i in case.frozen_blocks for n in w.built.blocks[i]}
    assert wrapped == (frozen if mechanism != "requires_grad" else set())
    with torch.no_grad():
        out = w.model(**w.inputs).logits  # type: ignore[arg-type]
        assert torch.equal(out, plain.model(**w.inputs).logits)  # type: ignore[arg-type]
