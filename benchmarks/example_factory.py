"""A worked example of ``--bench-model-factory``: a small U-Net for segmentation.

Run it with ``--bench-model-factory benchmarks.example_factory:build`` (or
``benchmarks/example_factory.py:build``); the quick profile runs it by default. It needs nothing
from freeze-bench: a factory returns a plain mapping (or a ``ModelSpec``).

Why a U-Net: its long skip connections make the verdicts of module-level freezing depend on the
data flow, not on the block order. Freezing the encoder (pattern ``prefix``) under ``no_grad`` is
valid, though the decoder reads the encoder's outputs: they need no gradient. Freezing the
bottleneck (``middle``) under ``no_grad`` is *not* a clean graph cut: the encoder still gets a
gradient through the skips, just not the part that flows through the bottleneck. The check
reports ``grad_mismatch`` (a wrong gradient, which training would silently follow), where a plain
stack reports ``graph_cut`` (no gradient at all).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CLASSES", "TinyUNet", "build"]

#: Segmentation classes per pixel.
CLASSES = 4


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: no running statistics, so that the verdicts below are about the
    # gradients only (BatchNorm in a frozen block changes its buffers in train mode).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(1, c_out), nn.ReLU())


class TinyUNet(nn.Module):
    """``depth`` encoder levels of ``width * 2**i`` channels (each halves the image), a
    bottleneck, and ``depth`` decoder levels that upsample and read the matching encoder level's
    output (the long skips); a 1x1 convolution gives ``CLASSES`` scores per pixel."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        channels = [width * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList(
            _conv(3 if i == 0 else channels[i - 1], channels[i]) for i in range(depth)
        )
        self.mid = _conv(channels[depth - 1], channels[depth])
        self.dec = nn.ModuleList(
            _conv(channels[i + 1] + channels[i], channels[i]) for i in range(depth)
        )
        self.head = nn.Conv2d(channels[0], CLASSES, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = nn.functional.avg_pool2d(x, 2)
        x = self.mid(x)
        for i in reversed(range(len(self.dec))):
            x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.dec[i](torch.cat([x, skips[i]], dim=1))
        out: Tensor = self.head(x)
        return out


def _pixel_loss(output: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy per pixel: ``output`` is ``(batch, CLASSES, H, W)``, ``targets``
    ``(batch, H, W)``."""
    return nn.functional.cross_entropy(output.float(), targets)


def build(depth: int, width: int, batch_size: int, image_size: int) -> dict[str, Any]:
    """The factory: a :class:`TinyUNet` of ``depth`` levels on ``image_size`` images (a multiple
    of ``2**depth``). Blocks in forward order: ``enc.0 .. enc.{depth-1}``, ``mid``, then
    ``dec.{depth-1} .. dec.0``; the 1x1 head is outside every block and always trains."""
    if image_size % 2**depth:
        raise ValueError(f"image_size={image_size} must be a multiple of 2**depth={2**depth}")

    def make_batch(gen: torch.Generator) -> tuple[Tensor, Tensor]:
        x = torch.randn((batch_size, 3, image_size, image_size), generator=gen)
        y = torch.randint(0, CLASSES, (batch_size, image_size, image_size), generator=gen)
        return x, y

    blocks = [f"enc.{i}" for i in range(depth)] + ["mid"]
    blocks += [f"dec.{i}" for i in reversed(range(depth))]
    return {
        "model": TinyUNet(depth, width),
        "blocks": blocks,
        "make_batch": make_batch,
        "loss": _pixel_loss,
    }
