"""``freeze-bench advise``: block discovery, the freeze spec, the errors, and three tiny models
end to end (saved with ``save_pretrained``, run through the suite's own pytest cases)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")

from bench_lib.advise import cli, loading, screen  # noqa: E402
from bench_lib.advise.errors import AdviseError  # noqa: E402
from bench_lib.advise.freezespec import parse_freeze  # noqa: E402
from bench_lib.advise.snippet import MAX_LINES, snippet  # noqa: E402
from bench_lib.analysis.cli import main as freeze_bench  # noqa: E402

T = transformers
FAST = ["--batch", "2", "--seq", "16", "--pairs", "6", "--time", "0.05", "--threads", "1"]
SMALL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def _configs() -> dict[str, tuple[Any, str]]:
    dec = {**SMALL, "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 64}
    return {
        "bert": (
            T.BertConfig(**SMALL, num_hidden_layers=2, vocab_size=64),
            "BertForSequenceClassification",
        ),
        "gpt2": (
            T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32),
            "GPT2LMHeadModel",
        ),
        "llama": (T.LlamaConfig(**dec), "LlamaForCausalLM"),
        "mixtral": (T.MixtralConfig(**dec, num_local_experts=4), "MixtralForCausalLM"),
        "vit": (
            T.ViTConfig(**SMALL, num_hidden_layers=2, image_size=16, patch_size=4),
            "ViTForImageClassification",
        ),
        "resnet": (
            T.ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
            ),
            "ResNetForImageClassification",
        ),
        "t5": (
            T.T5Config(
                d_model=32,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                d_kv=16,
                vocab_size=64,
                decoder_start_token_id=0,
                pad_token_id=0,
            ),
            "T5ForConditionalGeneration",
        ),
    }


EXPECTED = {
    "bert": (["bert.embeddings"], ["bert.encoder.layer"]),
    "gpt2": (["transformer.wte", "transformer.wpe"], ["transformer.h"]),
    "llama": (["model.embed_tokens"], ["model.layers"]),
    "mixtral": (["model.embed_tokens"], ["model.layers"]),
    "vit": (["vit.embeddings"], ["vit.layers"]),  # transformers 5.x (4.x: vit.encoder.layer)
    "resnet": (["resnet.embedder"], ["resnet.encoder.stages"]),
    "t5": (None, ["encoder.block", "decoder.block"]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_blocks_are_found_on_tiny_configs(name: str) -> None:
    import torch

    config, cls = _configs()[name]
    torch.manual_seed(0)
    model = getattr(T, cls)(config)
    batcher = loading.batcher_for(model, config, 1, 8, None)
    loss = loading.stand_in_loss if batcher.head == "base" else loading.own_loss

    def run(m: Any) -> Any:
        inputs, targets = batcher(torch.Generator().manual_seed(0))
        return loss(m(**inputs), targets)

    found = loading.discover_blocks(model, run)
    first, stacks = EXPECTED[name]
    assert found.stacks == stacks
    layers = [b[0] for b in found.blocks[1:]]
    assert layers == [f"{s}.{i}" for s in stacks for i in range(len(model.get_submodule(s)))]
    if first is not None:
        assert found.blocks[0] == first
    else:  # T5: its shared embedding, under whichever name runs first
        assert found.blocks[0][0] in ("shared", "encoder.embed_tokens")
    assert len(found.params) == len(found.blocks) and min(found.params) > 0
    if len(stacks) > 1:
        assert "chained in forward order" in found.how


def test_block_names_override_and_errors() -> None:
    import torch

    config, cls = _configs()["t5"]
    model = getattr(T, cls)(config)
    batcher = loading.batcher_for(model, config, 1, 8, None)

    def run(m: Any) -> Any:
        return m(**batcher(torch.Generator().manual_seed(0))[0])

    found = loading.discover_blocks(model, run, ["decoder.block"])
    assert found.stacks == ["decoder.block"]
    assert [b[0] for b in found.blocks[-2:]] == ["decoder.block.0", "decoder.block.1"]
    with pytest.raises(AdviseError, match="'nope' is not a submodule") as e:
        loading.discover_blocks(model, run, ["nope"])
    assert e.value.code == 2


def test_freeze_spec_parser() -> None:
    assert parse_freeze(None, 8).blocks == (0, 1, 2, 3)
    assert parse_freeze(None, 8).defaulted
    assert parse_freeze("middle", 9).blocks == (3, 4, 5)
    spec = parse_freeze("0-2,5", 8)
    assert (spec.pattern, spec.blocks) == ("explicit", (0, 1, 2, 5))
    assert spec.pytest_args() == ["--bench-pattern", "none,explicit", "--bench-blocks", "0,1,2,5"]
    spec = parse_freeze("model.layers.[0-3].*,*.bias", 8)
    assert (spec.pattern, spec.globs) == ("names", ("model.layers.[0-3].*", "*.bias"))
    assert spec.pytest_args()[-1] == "model.layers.[0-3].*,*.bias"
    assert parse_freeze("all_but_head", 3).blocks == (0, 1, 2)
    for bad, words in (
        ("0-9", "out of range for 8 blocks"),
        ("3-1", "runs backwards"),
        ("prefx", "is not a pattern"),
        ("a,,b", "empty"),
    ):
        with pytest.raises(AdviseError, match=words) as e:
            parse_freeze(bad, 8)
        assert e.value.code == 2
    with pytest.raises(AdviseError, match="needs depth >= 3"):
        parse_freeze("middle", 2)


def test_snippet_uses_real_names_in_five_lines() -> None:
    blocks = [["bert.embeddings"], ["bert.encoder.layer.0"], ["bert.encoder.layer.1"]]
    for mech in cli.MECHANISMS:
        lines = snippet(mech, blocks, ["bert.encoder.layer"])
        assert 1 < len(lines) <= MAX_LINES
        assert 'model.get_submodule("bert.embeddings")' in lines[0]
        assert '*model.get_submodule("bert.encoder.layer")[:2]' in lines[0]
        compile("\n".join(lines), mech, "exec")
    assert "torch.no_grad()" in "\n".join(snippet("no_grad", blocks, ["bert.encoder.layer"]))
    assert "fnmatch" in snippet("requires_grad", [], [], ["bert.embeddings.*"])[0]


def _row(mech: str, ratio: float, lo: float, hi: float, peak: int, verdict: str = "ok") -> Any:
    return screen.Row(
        mech, mech, verdict=verdict, ratio=ratio, lo=lo, hi=hi, peak=peak, ms=10 * ratio, flops=1.0
    )


def test_equivalent_set_overlaps_the_fastest_and_orders_by_peak() -> None:
    rows = [
        _row("none", 1.0, 0.98, 1.02, 100),
        _row("no_grad", 0.50, 0.48, 0.52, 60, verdict="graph_cut"),  # fastest, but invalid
        _row("requires_grad", 0.60, 0.58, 0.62, 70),
        _row("inference_mode", 0.61, 0.59, 0.63, 65),
        _row("optimizer_only", 0.90, 0.88, 0.92, 95),
    ]
    assert [r.mechanism for r in screen.equivalent_set(rows)] == ["inference_mode", "requires_grad"]
    assert "INVALID: cuts the graph" in screen.verdict_words(rows[1])
    assert screen.equivalent_set(rows[:2]) == []
    assert rows[2].resolved and not _row("x", 1.0, 0.9, 1.1, 1).resolved


# ---------------------------------------------------------------------------- bad input


def _fails(argv: list[str], code: int, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert freeze_bench(["advise", *argv]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("freeze-bench advise: ") and words in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert")
    config = T.BertConfig(
        **SMALL, num_hidden_layers=2, vocab_size=64, max_position_embeddings=32, num_labels=3
    )
    T.BertForSequenceClassification(config).save_pretrained(path)
    return path


def test_bad_inputs_are_one_line_errors(
    tmp_path: Path,
    bert_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    o = ["-o", str(out), "--seq", "16"]
    (tmp_path / "empty").mkdir()
    _fails([str(tmp_path / "empty"), *o], 3, "not a model directory (no config.json)", capsys)
    (tmp_path / "file.txt").write_text("x")
    _fails([str(tmp_path / "file.txt"), *o], 3, "not a model", capsys)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails(
        ["no-such-org/no-such-model", *o],
        3,
        "huggingface-cli download no-such-org/no-such-model",
        capsys,
    )
    _fails(
        [str(bert_dir), "--freeze", "nothing.*", *o], 2, "'nothing.*' matches no parameter", capsys
    )
    _fails([str(bert_dir), "--freeze", "*", *o], 2, "matches every parameter", capsys)
    _fails([str(bert_dir), "--freeze", "0-7", *o], 2, "out of range for 3 blocks", capsys)
    _fails([str(bert_dir), "-o", str(out), "--seq", "64"], 2, "--seq=64 is longer than", capsys)
    bad = tmp_path / "bad_factory.py"
    bad.write_text("def build(**kw):\n    raise RuntimeError('no weights here')\n")
    _fails([f"{bad}:build", *o], 3, "the factory raised RuntimeError: no weights here", capsys)
    _fails([f"{tmp_path / 'missing.py'}:build", *o], 3, "no factory file", capsys)
    monkeypatch.setattr(loading, "device_free_bytes", lambda device: 1000)
    _fails([str(bert_dir), *o], 3, "more than the 0.0 GiB free on cpu", capsys)
    assert not out.exists()  # nothing written by any of them
    assert freeze_bench(["advise", str(bert_dir), "--batch", "0"]) == 2


# ---------------------------------------------------------------------------- end to end


def _advise(model: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    code = freeze_bench(["advise", str(model), *FAST, "-o", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    lines = captured.out.strip().splitlines()
    assert len(lines) <= screen.MAX_LINES
    assert "cases done" in captured.err  # the progress line
    assert (out / "advise.json").is_file() and (out / "advise.md").is_file()
    assert (out / "advise.json.journal.jsonl").is_file()
    return lines


def _verdicts(out: Path) -> dict[str, str]:
    data = json.loads((out / "advise.json").read_text())
    return {r.mechanism: str(r.verdict) for r in screen.rows_from_json(data)}


def _recommended(lines: list[str]) -> list[str]:
    rec = next(line for line in lines if line.startswith("recommendation: "))
    return rec.removeprefix("recommendation: ").split(" (")[0].split(", ")


def test_decoder_lm_with_tied_embeddings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "gpt2"
    config = T.GPT2Config(
        n_embd=32,
        n_layer=3,
        n_head=2,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    T.GPT2LMHeadModel(config).save_pretrained(model)
    lines = _advise(model, tmp_path / "out", capsys)
    text = "\n".join(lines)
    assert "transformer.h (3 x GPT2Block)" in text
    assert "0 transformer.wte+transformer.wpe" in text
    assert "prefix (the default): blocks 0-1 of 4" in text
    verdicts = _verdicts(tmp_path / "out")
    assert verdicts["no_grad"] == "ok" and verdicts["requires_grad"] == "ok"
    valid = {m for m, v in verdicts.items() if v == "ok"}
    assert set(_recommended(lines)) <= valid
    assert 'model.get_submodule("transformer.wte")' in text  # the snippet's real names
    data = json.loads((tmp_path / "out" / "advise.json").read_text())
    frozen = [b["extra_info"] for b in data["benchmarks"] if b["extra_info"]["pattern"] != "none"]
    assert frozen and all(r["tied_frozen"] == 1 for r in frozen)  # the LM head's weight (wte)


def test_encoder_classifier_middle_block_is_a_graph_cut(
    tmp_path: Path, bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _advise(bert_dir, tmp_path / "out", capsys, "--freeze", "1")
    text = "\n".join(lines)
    assert "bert.encoder.layer (2 x BertLayer)" in text and "frozen: blocks 1 of 3" in text
    verdicts = _verdicts(tmp_path / "out")
    assert verdicts["no_grad"] == "graph_cut" and verdicts["inference_mode"] == "graph_cut"
    assert verdicts["requires_grad"] == "ok"
    assert "INVALID: cuts the graph" in text
    recommended = _recommended(lines)
    assert "no_grad" not in recommended and "inference_mode" not in recommended
    assert set(recommended) <= {m for m, v in verdicts.items() if v == "ok"}


def test_vit_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "vit"
    config = T.ViTConfig(**SMALL, num_hidden_layers=2, image_size=16, patch_size=4, num_labels=3)
    T.ViTForImageClassification(config).save_pretrained(model)
    lines = _advise(model, tmp_path / "out", capsys)
    text = "\n".join(lines)
    assert "vit.layers (2 x ViTLayer)" in text and "pixel_values 2 x 3 x 16 x 16" in text
    verdicts = _verdicts(tmp_path / "out")
    assert verdicts["no_grad"] == "ok"
    assert set(_recommended(lines)) <= {m for m, v in verdicts.items() if v == "ok"}
    md = (tmp_path / "out" / "advise.md").read_text()
    assert "| mechanism | verdict |" in md and md.count("\n| ") >= 7
    assert os.path.isfile(tmp_path / "out" / "advise_factory.py")
