"""The transformers families: ResNet, ViT, BERT and GPT-2 as people fine-tune them, initialised at
random from their configurations (nothing is downloaded) and run through their own ``forward``.

Sizes: ``depth`` counts layers (encoder or decoder layers; ResNet's residual layers, see
:func:`resnet_stage_depths`) and ``width`` is the hidden size (ResNet: the stem's channels).
Block 0 is the model's input stage (the embeddings, or ResNet's stem) and blocks 1..depth are its
layers in forward order, so a case has ``depth + 1`` blocks. Whatever is outside every block
(poolers, final norms, heads) trains. Dropout is 0 everywhere, so that verdicts are
deterministic; attention is transformers' default ``sdpa`` (see :data:`ATTENTION`).

transformers is an optional dependency (the ``models`` extra). This module does not import it:
it is imported when a model is first built, and where it is missing the families say so
(:meth:`~.base.Family.unavailable`) and their cases are skipped with the install command.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from ..spec import Case
from .base import Batch, BlockNames, Family, default_loss
from .stacks import NUM_CLASSES, attention_heads

__all__ = [
    "ATTENTION",
    "INSTALL_HINT",
    "HfFamily",
    "hf_heads",
    "resnet_stage_depths",
    "transformers_missing",
]

INSTALL_HINT = 'pip install -e ".[models]"'
#: transformers' attention implementation: ``sdpa`` (``scaled_dot_product_attention``), what
#: users get by default. The FLOP counter has formulas for its CPU kernels (added in
#: :mod:`bench_lib.measuring.flops`) and its CUDA ones (torch's own); a kernel without one would
#: be listed in ``flops_uncounted_ops``. ``eager`` (``matmul`` and ``softmax``) counts the same
#: products but is slower and holds the attention matrix.
ATTENTION = "sdpa"
#: ResNet-50's residual layers per stage: the proportions :func:`resnet_stage_depths` keeps.
RESNET50_DEPTHS = (3, 4, 6, 3)


def transformers_missing() -> str | None:
    """``None`` when transformers can be imported, else the sentence that says how to get it."""
    try:
        found = importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):  # a broken or half-imported package
        found = False
    return None if found else f"transformers is not installed (the models extra): {INSTALL_HINT}"


def _transformers() -> Any:
    reason = transformers_missing()
    if reason:
        raise ModuleNotFoundError(reason)
    return importlib.import_module("transformers")


def hf_heads(width: int) -> int:
    """Attention heads of 64 features where ``width`` allows it (the real models: 768 -> 12),
    else :func:`~.stacks.attention_heads`'s rule for small widths."""
    return width // 64 if width % 64 == 0 else attention_heads(width)


def resnet_stage_depths(depth: int) -> tuple[int, ...]:
    """Residual layers per stage for ``depth`` layers in all: ``depth`` stages of one layer below
    4; else 4 stages, one layer each and the rest dealt in ResNet-50's proportions 3:4:6:3 by
    largest remainder (earlier stage first on ties). ``resnet_stage_depths(16)`` is ResNet-50's
    ``(3, 4, 6, 3)``."""
    if depth < 4:
        return (1,) * depth
    rest = depth - 4
    total = sum(RESNET50_DEPTHS)
    shares = [rest * k / total for k in RESNET50_DEPTHS]
    out = [int(s) for s in shares]
    order = sorted(range(4), key=lambda i: (-(shares[i] - out[i]), i))
    for i in order[: rest - sum(out)]:
        out[i] += 1
    return tuple(1 + n for n in out)


def _encoder_config(case: Case) -> dict[str, Any]:
    """What ViT's and BERT's configurations share: ``depth`` layers of ``width``, heads of 64
    features where the width allows, MLP ``4 * width``, 10 classes, no dropout, SDPA."""
    return {
        "hidden_size": case.width,
        "num_hidden_layers": case.depth,
        "num_attention_heads": hf_heads(case.width),
        "intermediate_size": 4 * case.width,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "num_labels": NUM_CLASSES,
        "attn_implementation": ATTENTION,
    }


def _layer_path(model: nn.Module, paths: Sequence[str]) -> str:
    """The first of ``paths`` that names a submodule of ``model`` (transformers moved some layer
    lists between versions, e.g. ViT's ``vit.encoder.layer`` became ``vit.layers``)."""
    for path in paths:
        try:
            model.get_submodule(path)
        except AttributeError:
            continue
        return path
    raise ValueError(f"{type(model).__name__} has none of the layer lists {', '.join(paths)}")


class HfFamily(Family):
    """A transformers model built from :meth:`config`: block 0 is ``input_block`` (one or more
    submodule names), blocks 1..depth the layers of the first of ``layer_paths`` found."""

    model_class: str
    input_block: tuple[str, ...]
    layer_paths: tuple[str, ...]

    def unavailable(self) -> str | None:
        return transformers_missing()

    def num_blocks(self, case: Case) -> int:
        return case.depth + 1

    def config(self, transformers: Any, case: Case) -> Any:
        """The model's configuration for ``case`` (``transformers`` is the imported module)."""
        raise NotImplementedError

    def model(self, case: Case) -> nn.Module:
        transformers = _transformers()
        model: nn.Module = getattr(transformers, self.model_class)(self.config(transformers, case))
        return model

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        path = _layer_path(model, self.layer_paths)
        layers = model.get_submodule(path)
        assert isinstance(layers, nn.ModuleList | nn.Sequential)
        return [self.input_block, *(f"{path}.{i}" for i in range(len(layers)))]


class _Images(HfFamily):
    """Image classifiers: ``pixel_values`` of ``(batch, 3, image_size, image_size)`` and 10
    classes."""

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        side = self.size(case, "image_size")
        x = torch.randn((case.batch_size, 3, side, side), generator=gen)
        y = torch.randint(0, NUM_CLASSES, (case.batch_size,), generator=gen)
        return {"pixel_values": x}, y


class ResNet(_Images):
    """``ResNetForImageClassification``, bottleneck layers: stem of ``width`` channels, stages of
    ``4*width*2**s`` output channels with :func:`resnet_stage_depths` layers each; BatchNorm
    throughout. Block 0 is the stem (``resnet.embedder``: conv, norm, max-pool), then every
    residual layer (the first of each stage holds its shortcut). Depth 16, width 64 at 224x224 is
    ResNet-50 (with a 10-class head)."""

    name = "resnet"
    model_class = "ResNetForImageClassification"
    input_block = ("resnet.embedder",)
    sizes = MappingProxyType({"image_size": 32})

    def config(self, transformers: Any, case: Case) -> Any:
        depths = resnet_stage_depths(case.depth)
        return transformers.ResNetConfig(
            embedding_size=case.width,
            hidden_sizes=[4 * case.width * 2**s for s in range(len(depths))],
            depths=list(depths),
            layer_type="bottleneck",
            hidden_act="relu",
            num_labels=NUM_CLASSES,
        )

    def blocks(self, case: Case, model: nn.Module) -> Sequence[BlockNames]:
        stages = model.get_submodule("resnet.encoder.stages")
        assert isinstance(stages, nn.ModuleList)
        layers = []
        for s, stage in enumerate(stages):
            in_stage = stage.get_submodule("layers")
            assert isinstance(in_stage, nn.Sequential | nn.ModuleList)
            layers += [f"resnet.encoder.stages.{s}.layers.{i}" for i in range(len(in_stage))]
        return [self.input_block, *layers]


class ViT(_Images):
    """``ViTForImageClassification``: ``depth`` encoder layers of ``width`` (heads of 64
    features where the width allows), MLP ``4*width``, patches of ``patch_size``. Block 0 is the
    embeddings (patch projection, class token and position embeddings together); the final norm
    and the classifier train. Depth 12, width 768, 224x224, patch 16 is ViT-B/16."""

    name = "vit"
    model_class = "ViTForImageClassification"
    input_block = ("vit.embeddings",)
    layer_paths = ("vit.encoder.layer", "vit.layers")
    sizes = MappingProxyType({"image_size": 32, "patch_size": 4})

    def config(self, transformers: Any, case: Case) -> Any:
        return transformers.ViTConfig(
            image_size=self.size(case, "image_size"),
            patch_size=self.size(case, "patch_size"),
            **_encoder_config(case),
        )


class Bert(HfFamily):
    """``BertForSequenceClassification``: ``depth`` encoder layers of ``width`` (heads of 64
    features where the width allows), MLP ``4*width``, ``vocab_size`` tokens, 10 classes; keyword
    inputs ``input_ids`` and ``attention_mask`` (each sequence padded after a random length of at
    least half ``seq_len``). Block 0 is the embeddings (word, position and token-type
    embeddings and their norm); the pooler and the classifier train. Depth 12, width 768,
    vocabulary 30522 is bert-base."""

    name = "bert"
    model_class = "BertForSequenceClassification"
    input_block = ("bert.embeddings",)
    layer_paths = ("bert.encoder.layer", "bert.layers")
    sizes = MappingProxyType({"seq_len": 32, "vocab_size": 1024})

    def config(self, transformers: Any, case: Case) -> Any:
        return transformers.BertConfig(
            vocab_size=self.size(case, "vocab_size"),
            max_position_embeddings=max(512, self.size(case, "seq_len")),
            classifier_dropout=0.0,
            **_encoder_config(case),
        )

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        b, s = case.batch_size, self.size(case, "seq_len")
        ids = torch.randint(0, self.size(case, "vocab_size"), (b, s), generator=gen)
        lengths = torch.randint((s + 1) // 2, s + 1, (b, 1), generator=gen)
        mask = (torch.arange(s) < lengths).long()
        y = torch.randint(0, NUM_CLASSES, (b,), generator=gen)
        return {"input_ids": ids, "attention_mask": mask}, y


class Gpt2(HfFamily):
    """``GPT2LMHeadModel``: ``depth`` decoder layers of ``width`` (heads of 64 features where
    the width allows), ``vocab_size`` tokens, 1024 positions (more if ``seq_len`` needs them);
    keyword input ``input_ids``, loss the causal-LM cross-entropy (logits at position t against
    token t+1). Block 0 is the embeddings (``wte`` and ``wpe`` together). The LM head's weight
    *is* ``wte.weight`` (tied): freezing the embeddings freezes the head's weight too, under
    every mechanism, while the final norm trains. Depth 12, width 768, vocabulary 50257 is
    GPT-2 (124M)."""

    name = "gpt2"
    model_class = "GPT2LMHeadModel"
    input_block = ("transformer.wte", "transformer.wpe")
    layer_paths = ("transformer.h",)
    sizes = MappingProxyType({"seq_len": 32, "vocab_size": 1024})

    def config(self, transformers: Any, case: Case) -> Any:
        vocab = self.size(case, "vocab_size")
        return transformers.GPT2Config(
            vocab_size=vocab,
            n_embd=case.width,
            n_layer=case.depth,
            n_head=hf_heads(case.width),
            n_positions=max(1024, self.size(case, "seq_len")),
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=vocab - 1,
            eos_token_id=vocab - 1,
            tie_word_embeddings=True,
            attn_implementation=ATTENTION,
        )

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        shape = (case.batch_size, self.size(case, "seq_len"))
        ids = torch.randint(0, self.size(case, "vocab_size"), shape, generator=gen)
        return {"input_ids": ids}, ids.clone()

    def loss(self, case: Case, output: Any, targets: Tensor) -> Tensor:
        logits: Tensor = output.logits
        return default_loss(logits[:, :-1], targets[:, 1:])


RESNET, VIT, BERT, GPT2 = ResNet(), ViT(), Bert(), Gpt2()
