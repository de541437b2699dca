"""Test-only pytest plugin (``-p oom_plugin``): the ``mlp`` family raises torch's
OutOfMemoryError for depth 5, as a GPU that is too small would."""

from __future__ import annotations

import torch

from bench_lib.measuring.families import FAMILIES
from bench_lib.measuring.families.stacks import Mlp, Stack
from bench_lib.measuring.spec import Case

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _MlpOrOom(Mlp):
    def model(self, case: Case) -> Stack:
        if case.depth == 5:
            raise OOM("CUDA out of memory. Tried to allocate 20.00 GiB (injected by oom_plugin)")
        return super().model(case)


FAMILIES["mlp"] = _MlpOrOom()
