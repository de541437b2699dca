"""Exact cost of one step in FLOPs, counted with ``torch.utils.flop_counter.FlopCounterMode``.

The counter follows the usual convention: matrix products, convolutions and attention count
``2 * m * n * k``; elementwise work (activations, norms, the optimizer update) counts nothing.
The stock registry misses operators this suite runs into, so formulas are added here:

* ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward (CPU SDPA; pytorch
  issue 195460, fixed upstream after 2.13 with the same formulas),
* ``aten._transformer_encoder_layer_fwd`` (the fused fast path ``nn.TransformerEncoderLayer``
  takes in eval mode without grad).

Any other operator that looks costly (a matrix product, convolution or attention by name) and
still has no formula is reported in ``uncounted_ops`` so that an undercount is never silent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

from .training import Workload

__all__ = ["CUSTOM_FORMULAS", "StepFlops", "count_step_flops", "encoder_layer_flops"]

aten = torch.ops.aten
Shape = Any  # torch.Size, as FlopCounterMode hands shapes to formulas

# Operators whose name says they do real arithmetic (as opposed to views and elementwise ops).
_COSTLY = re.compile(
    r"(mm|conv|attention|linear|matmul|einsum|transformer|multi_head|lstm|gru|rnn)"
)


def encoder_layer_flops(src: Shape, qkv_weight: Shape, ffn_weight_1: Shape) -> int:
    """FLOPs of one ``nn.TransformerEncoderLayer`` forward on a ``(batch, seq, embed)`` input:
    QKV projection, the two attention products, output projection and the two FFN linears."""
    b, s, e = src
    tokens = b * s
    ffn = ffn_weight_1[0]
    qkv = 2 * tokens * e * qkv_weight[0]
    attention = 4 * b * s * s * e
    out_proj = 2 * tokens * e * e
    mlp = 4 * tokens * e * ffn
    return int(qkv + attention + out_proj + mlp)


def _encoder_layer_fwd(
    src: Shape,
    embed_dim: int,
    num_heads: int,
    qkv_weight: Shape,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    # args: qkv_bias, proj_weight, proj_bias, use_gelu, norm_first, eps, norm_w1, norm_b1,
    # norm_w2, norm_b2, ffn_weight_1, ...
    return encoder_layer_flops(src, qkv_weight, args[10])


def _sdpa_cpu(
    query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(flop_counter.sdpa_flop_count(query, key, value))


def _sdpa_cpu_backward(
    grad_out: Shape,
    query: Shape,
    key: Shape,
    value: Shape,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    return int(flop_counter.sdpa_backward_flop_count(grad_out, query, key, value))


CUSTOM_FORMULAS: dict[Any, Callable[..., int]] = {}
for _name, _fn in (
    ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward),
    ("_transformer_encoder_layer_fwd", _encoder_layer_fwd),
):
    if hasattr(aten, _name):  # older torch builds lack some of these operators
        CUSTOM_FORMULAS[getattr(aten, _name)] = _fn


class _OpRecorder(TorchDispatchMode):
    """Collects the overload packets of every operator dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.add(func)
        return func(*args, **(kwargs or {}))


def _decomposes(op: Any) -> bool:
    """A CompositeImplicitAutograd operator (``aten.linear`` under inference mode) runs as the
    operators it is made of, which the counter sees and counts themselves."""
    return bool(
        torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd")
    )


@dataclass(frozen=True)
class StepFlops:
    forward: int
    backward: int
    uncounted_ops: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.forward + self.backward


def _counter() -> flop_counter.FlopCounterMode:
    return flop_counter.FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS)


def count_step_flops(w: Workload) -> StepFlops:
    """FLOPs of the forward pass (loss included) and of the backward pass of one step of ``w``.

    Leaves ``w``'s gradients as a step would (they are released by the next ``zero_grad``); does
    not step the optimizer. A compiled case is counted on its eager forward (the same arithmetic:
    inductor fuses kernels and may turn small products into loops that no counter around
    compiled code would see), under its autocast and checkpoint wrappers.
    """
    w.mechanism.zero_grad(w)
    recorder = _OpRecorder()
    with _counter() as fwd, recorder:
        loss = w.forward_loss(eager=True)
    with _counter() as bwd, recorder:
        w.mechanism.backward(loss, w.trainable)
    known = set(flop_counter.flop_registry) | set(CUSTOM_FORMULAS)
    uncounted = sorted(
        {
            str(op.overloadpacket)
            for op in recorder.ops
            if op.overloadpacket not in known
            and _COSTLY.search(str(op.overloadpacket))
            and not _decomposes(op)
        }
    )
    return StepFlops(int(fwd.get_total_flops()), int(bwd.get_total_flops()), tuple(uncounted))
