"""The built-in families: stacks of blocks (``blocks.0``, ``blocks.1``, ...) and a trainable
head, on a random batch of fixed sample shape with 10 classes.

Dropout is 0 everywhere: the validity checks compare gradients between runs and must be
deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import torch
from torch import Tensor, nn

from ..spec import Case
from .base import Batch, Family

__all__ = ["NUM_CLASSES", "Stack", "StackFamily", "attention_heads"]

NUM_CLASSES = 10


class Stack(nn.Module):
    """``blocks`` in sequence, then ``head``."""

    def __init__(self, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(x)
        return out


class MeanPool(nn.Module):
    """Mean over the sequence axis of ``(batch, seq, features)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


class StackFamily(Family):
    """A :class:`Stack` whose blocks are the freezable ones, fed ``randn(batch, *sample_shape)``
    and class targets drawn from the same generator."""

    def model(self, case: Case) -> Stack:
        raise NotImplementedError

    def sample_shape(self, case: Case) -> tuple[int, ...]:
        """The shape of one input sample."""
        raise NotImplementedError

    def blocks(self, case: Case, model: nn.Module) -> Sequence[str]:
        assert isinstance(model, Stack)
        return [f"blocks.{i}" for i in range(len(model.blocks))]

    def batch(self, case: Case, gen: torch.Generator) -> Batch:
        x = torch.randn((case.batch_size, *self.sample_shape(case)), generator=gen)
        y = torch.randint(0, NUM_CLASSES, (case.batch_size,), generator=gen)
        return x, y


def attention_heads(width: int) -> int:
    """Attention heads for ``width``: 8, 4 or 2 where each head keeps 16 features or more, else
    1."""
    for h in (8, 4, 2):
        if width % h == 0 and width // h >= 16:
            return h
    return 1


def _encoder_layer(width: int) -> nn.Module:
    return nn.TransformerEncoderLayer(
        width, attention_heads(width), dim_feedforward=4 * width, dropout=0.0, batch_first=True
    )


class Mlp(StackFamily):
    """Blocks ``Linear(w, w) + ReLU`` on an input of width w; head ``Linear(w, 10)``."""

    name = "mlp"

    def model(self, case: Case) -> Stack:
        w = case.width
        blocks: list[nn.Module] = [
            nn.Sequential(nn.Linear(w, w), nn.ReLU()) for _ in range(case.depth)
        ]
        return Stack(blocks, nn.Linear(w, NUM_CLASSES))

    def sample_shape(self, case: Case) -> tuple[int, ...]:
        return (case.width,)


class Transformer(StackFamily):
    """Blocks ``nn.TransformerEncoderLayer`` (dropout 0, batch first) on ``(seq_len, w)``
    samples; head mean-pool + ``Linear(w, 10)``."""

    name = "transformer"
    sizes = MappingProxyType({"seq_len": 32})

    def model(self, case: Case) -> Stack:
        w = case.width
        blocks = [_encoder_layer(w) for _ in range(case.depth)]
        return Stack(blocks, nn.Sequential(MeanPool(), nn.Linear(w, NUM_CLASSES)))

    def sample_shape(self, case: Case) -> tuple[int, ...]:
        return (self.size(case, "seq_len"), case.width)


class Cnn(StackFamily):
    """Blocks ``Conv2d(3x3, no bias) + BatchNorm2d + ReLU`` with w channels (block 0 takes the
    3-channel image); head global average pool + ``Linear(w, 10)``."""

    name = "cnn"
    sizes = MappingProxyType({"image_size": 16})

    def model(self, case: Case) -> Stack:
        c = case.width
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(3 if i == 0 else c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            )
            for i in range(case.depth)
        ]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, NUM_CLASSES))
        return Stack(blocks, head)

    def sample_shape(self, case: Case) -> tuple[int, ...]:
        size = self.size(case, "image_size")
        return (3, size, size)


class Xy(StackFamily):
    """The seed scenario: model X (transformer encoder, blocks ``0..depth//2-1``) feeds model Y
    (mean-pool, then ``Linear + ReLU`` blocks) and its head. Pattern ``prefix`` freezes exactly
    X."""

    name = "xy"
    sizes = MappingProxyType({"seq_len": 32})

    def model(self, case: Case) -> Stack:
        w = case.width
        n_x = max(1, case.depth // 2)
        x_blocks = [_encoder_layer(w) for _ in range(n_x)]
        y_blocks: list[nn.Module] = [
            nn.Sequential(*([MeanPool()] if i == 0 else []), nn.Linear(w, w), nn.ReLU())
            for i in range(case.depth - n_x)
        ]
        if not y_blocks:
            raise ValueError(f"model 'xy' needs depth >= 2 (X and Y), got depth={case.depth}")
        return Stack(x_blocks + y_blocks, nn.Linear(w, NUM_CLASSES))

    def sample_shape(self, case: Case) -> tuple[int, ...]:
        return (self.size(case, "seq_len"), case.width)


MLP, TRANSFORMER, CNN, XY = Mlp(), Transformer(), Cnn(), Xy()
