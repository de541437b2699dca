"""Model families as stacks of blocks plus a trainable head, so that patterns can index blocks.

Every builder takes a :class:`~bench_lib.measuring.spec.Case` and returns a
:class:`BlockModel`. Dropout is 0 everywhere: the validity checks compare gradients between
runs and must be deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .spec import Case

__all__ = ["BUILDERS", "FAMILY_SIZES", "NUM_CLASSES", "BlockModel", "build_model", "family_size"]

NUM_CLASSES = 10

#: Family-specific sizes a builder reads from ``Case.extra``, with their defaults.
FAMILY_SIZES: dict[str, dict[str, int]] = {
    "transformer": {"seq_len": 32},
    "xy": {"seq_len": 32},
    "cnn": {"image_size": 16},
}


def family_size(case: Case, key: str) -> int | None:
    """``case``'s value of a family size (``seq_len``, ``image_size``), or ``None`` if the family
    has no such size."""
    default = FAMILY_SIZES.get(case.model, {}).get(key)
    return None if default is None else case.option(key, default)


class BlockModel(nn.Module):
    """``blocks`` (indexed by patterns) followed by ``head`` (always trainable).

    ``input_shape`` is the shape of one sample; :meth:`make_batch` draws a seeded batch.
    """

    def __init__(self, blocks: list[nn.Module], head: nn.Module, input_shape: tuple[int, ...]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.head(x)
        return out

    def make_batch(
        self, batch_size: int, *, seed: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Inputs of shape ``(batch_size, *input_shape)`` and integer class targets."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn((batch_size, *self.input_shape), generator=gen)
        y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen)
        return x.to(device=device, dtype=dtype), y.to(device)

    @staticmethod
    def loss(out: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.float(), target)


class MeanPool(nn.Module):
    """Mean over the sequence axis of ``(batch, seq, features)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=1)


def _mlp(case: Case) -> BlockModel:
    w = case.width
    blocks: list[nn.Module] = [nn.Sequential(nn.Linear(w, w), nn.ReLU()) for _ in range(case.depth)]
    return BlockModel(blocks, nn.Linear(w, NUM_CLASSES), (w,))


def _size(case: Case, key: str) -> int:
    size = family_size(case, key)
    assert size is not None, f"{case.model} has no {key}"
    return size


def _heads(width: int) -> int:
    for h in (8, 4, 2):
        if width % h == 0 and width // h >= 16:
            return h
    return 1


def _encoder_layer(width: int) -> nn.Module:
    return nn.TransformerEncoderLayer(
        width, _heads(width), dim_feedforward=4 * width, dropout=0.0, batch_first=True
    )


def _transformer(case: Case) -> BlockModel:
    w = case.width
    blocks = [_encoder_layer(w) for _ in range(case.depth)]
    head = nn.Sequential(MeanPool(), nn.Linear(w, NUM_CLASSES))
    return BlockModel(blocks, head, (_size(case, "seq_len"), w))


def _cnn(case: Case) -> BlockModel:
    c = case.width
    blocks: list[nn.Module] = [
        nn.Sequential(
            nn.Conv2d(3 if i == 0 else c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        for i in range(case.depth)
    ]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, NUM_CLASSES))
    size = _size(case, "image_size")
    return BlockModel(blocks, head, (3, size, size))


def _xy(case: Case) -> BlockModel:
    """The seed scenario: model X (transformer encoder, blocks ``0..depth//2-1``) feeds model Y
    (mean-pool, then MLP blocks) and its head. Pattern ``prefix`` freezes exactly X."""
    w = case.width
    n_x = max(1, case.depth // 2)
    x_blocks = [_encoder_layer(w) for _ in range(n_x)]
    y_blocks: list[nn.Module] = [
        nn.Sequential(*([MeanPool()] if i == 0 else []), nn.Linear(w, w), nn.ReLU())
        for i in range(case.depth - n_x)
    ]
    if not y_blocks:
        raise ValueError(f"model 'xy' needs depth >= 2 (X and Y), got depth={case.depth}")
    return BlockModel(x_blocks + y_blocks, nn.Linear(w, NUM_CLASSES), (_size(case, "seq_len"), w))


BUILDERS: dict[str, Callable[[Case], BlockModel]] = {
    "mlp": _mlp,
    "transformer": _transformer,
    "cnn": _cnn,
    "xy": _xy,
}


def build_model(case: Case) -> BlockModel:
    """Build ``case``'s model, seeded, on its device and dtype, in train mode."""
    torch.manual_seed(case.seed)
    model = BUILDERS[case.model](case)
    dtype = getattr(torch, case.dtype)
    return model.to(device=torch.device(case.device), dtype=dtype).train()
