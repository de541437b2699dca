"""Test-only pytest plugin (``-p oom_plugin``): the ``mlp`` family raises torch's
OutOfMemoryError for depth 5, as a GPU that is too small would."""

from __future__ import annotations

from typing import Any

import torch

from bench_lib.measuring import models

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_real_mlp = models.BUILDERS["mlp"]


def _mlp_or_oom(case: Any) -> models.BlockModel:
    if case.depth == 5:
        raise OOM("CUDA out of memory. Tried to allocate 20.00 GiB (injected by oom_plugin)")
    return _real_mlp(case)


models.BUILDERS["mlp"] = _mlp_or_oom
