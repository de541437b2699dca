"""The step axes' effects on a workload: autocast (``amp``), ``torch.compile`` (``compile``) and
activation checkpointing (``checkpoint``).

The axes' values, defaults and id fragments live in :mod:`bench_lib.vocab` and
:mod:`.spec`, the combinations that cannot run in :mod:`.axes`; this module is what each value
*does* to the step. ``Case.baseline()`` keeps all three, so a case's ratio is against the same
set-up with nothing frozen; the runner also times each case against its twin with the step axes
at their defaults (``axis_twin_ratio``).

* ``amp`` ``bf16``/``fp16``: forward and loss run under ``torch.autocast(device_type, dtype)``;
  parameters, gradients and optimizer state stay float32. ``fp16`` scales the loss with
  ``torch.amp.GradScaler`` and unscales the gradients right after backward (so that the
  gradients a step leaves are the true ones: the validity check compares them), then steps
  through the scaler.
* ``compile`` ``on``: the function that runs forward and loss (``loss(model(inputs), targets)``
  under the autocast, through the mechanism's wrappers) goes through ``torch.compile`` with the
  default backend (inductor) and mode (``"default"``: no CUDA graphs, no autotuning). Backward
  and the optimizer step stay outside it, as in most training scripts (AOTAutograd compiles the
  backward of the compiled forward). Compiling the model object would compile nothing here: the
  step never calls ``model.forward`` through our code path, it calls that function. Each
  workload compiles its own copy of the function (a fresh code object), so that dynamo's cache
  entries, guards and recompiles are the workload's own and not shared with a twin built in the
  same process. The measurement hooks (saved-tensor hooks, the FLOP counter, the profiler) are
  entered around the compiled call, never inside the compiled function.
* ``checkpoint`` ``on``: every block that holds a parameter meant to train runs through
  ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, by a wrapper on its modules'
  ``forward`` (removable, like the module-level mechanisms'). Frozen blocks are left alone: the
  checkpointed set is the same for every mechanism of a pattern, and what a frozen block keeps
  for backward is the mechanism's doing. Under ``no_grad``, ``inference_mode`` and a frozen
  prefix with ``requires_grad=False`` a frozen block records no graph, so there is nothing to
  checkpoint; under ``optimizer_only`` and ``backward_inputs`` it keeps its activations, which
  is what those mechanisms cost. Checkpointing re-runs a block's forward during backward, so a
  trainable BatchNorm updates its running statistics twice per step (a known property of
  checkpointing, not of freezing).
"""

from __future__ import annotations

import contextlib
import re
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..vocab import STEP_AXES
from .families.base import Inputs, call_model
from .mechanisms.base import FreezePlan, Uninstall
from .spec import Case

__all__ = [
    "AMP_DTYPES",
    "COMPILE_MODE",
    "CompileCounts",
    "CompileWatch",
    "StepError",
    "StepVariant",
    "amp_dtype",
    "autocast",
    "axis_twin",
    "build_variant",
    "check_compiled",
    "checkpointed_blocks",
    "compile_errors",
    "compile_scope",
]

#: The autocast dtype of each ``amp`` value.
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: ``torch.compile``'s mode (the default: inductor without CUDA graphs or autotuning).
COMPILE_MODE = "default"

Loss = Callable[[Any, Tensor], Tensor]


class StepError(RuntimeError):
    """The step set-up cannot be measured: compile ran nothing, or hit dynamo's recompile limit."""


def amp_dtype(case: Case) -> torch.dtype | None:
    """The autocast dtype of ``case`` (``None`` without autocast)."""
    return AMP_DTYPES.get(case.amp)


def autocast(case: Case, device_type: str) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` for ``case``'s ``amp`` on ``device_type`` (a null context for
    ``none``): the validity check runs its reference under it too."""
    dtype = amp_dtype(case)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def _forward_loss(model: nn.Module, loss: Loss, inputs: Inputs, targets: Tensor) -> Tensor:
    return loss(call_model(model, inputs), targets)


def _autocast_forward_loss(
    model: nn.Module,
    loss: Loss,
    inputs: Inputs,
    targets: Tensor,
    device_type: str,
    dtype: torch.dtype,
) -> Tensor:
    with torch.autocast(device_type, dtype=dtype):
        return loss(call_model(model, inputs), targets)


def _own_copy(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` with a code object of its own: dynamo keeps compiled code, guards and recompile
    counts per code object, so each workload's compile stays its own."""
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def checkpointed_blocks(plan: FreezePlan) -> list[int]:
    """The blocks ``checkpoint on`` wraps: those holding a parameter meant to train."""
    trainable = {id(p) for p in plan.trainable_params()}
    return [
        i
        for i in range(len(plan.blocks))
        if any(id(p) in trainable for _, m in plan.modules(i) for p in m.parameters())
    ]


def _wrap_checkpoint(module: nn.Module) -> Uninstall:
    """Make ``module``'s forward run through non-reentrant checkpointing; returns what removes
    it (wrappers on one module come off in reverse order, like the mechanisms' wrappers)."""
    ref = weakref.ref(module)
    shadowed = module.__dict__.get("forward")
    plain = type(module).forward

    def run(*args: Any, **kwargs: Any) -> Any:
        m = ref()
        assert m is not None, "a module's checkpoint wrapper outlived its module"
        return shadowed(*args, **kwargs) if shadowed is not None else plain(m, *args, **kwargs)

    def forward(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    module.__dict__["forward"] = forward

    def uninstall() -> None:
        m = ref()
        if m is None or m.__dict__.get("forward") is not forward:
            return
        if shadowed is None:
            del m.__dict__["forward"]
        else:
            m.__dict__["forward"] = shadowed

    return uninstall


def _install_checkpoint(plan: FreezePlan) -> Uninstall:
    removers = [_wrap_checkpoint(m) for i in checkpointed_blocks(plan) for _, m in plan.modules(i)]

    def uninstall() -> None:
        for remove in reversed(removers):
            remove()

    return uninstall


class StepVariant:
    """How a workload's step runs forward and loss, scales the loss and steps the optimizer."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case = case
        self.device_type = device.type
        dtype = amp_dtype(case)
        self._args: tuple[Any, ...] = () if dtype is None else (device.type, dtype)
        self._eager: Callable[..., Tensor] = (
            _forward_loss if dtype is None else _autocast_forward_loss
        )
        self._run = self._eager
        if case.compile == "on":
            self._run = torch.compile(_own_copy(self._eager), mode=COMPILE_MODE)
        self.scaler = torch.amp.GradScaler(device.type) if case.amp == "fp16" else None

    def forward_loss(
        self, model: nn.Module, loss: Loss, inputs: Inputs, targets: Tensor, *, eager: bool
    ) -> Tensor:
        """The loss of forward and loss under the axes; ``eager`` bypasses ``torch.compile``
        (the FLOP counter counts the eager step: inductor fuses and may decompose products
        that a counter around compiled code would miss)."""
        run = self._eager if eager else self._run
        return run(model, loss, inputs, targets, *self._args)

    def scale(self, loss: Tensor) -> Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward: the optimizer's gradients back to their true scale (fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()


def build_variant(
    case: Case, plan: FreezePlan, device: torch.device, uninstall: Uninstall
) -> tuple[StepVariant, Uninstall]:
    """``case``'s step variant, with its checkpoint wrappers installed on ``plan``'s model after
    the mechanism's (whose ``uninstall`` is given), and what removes both in reverse order."""
    if case.checkpoint != "on":
        return StepVariant(case, device), uninstall
    unwrap = _install_checkpoint(plan)

    def remove() -> None:
        unwrap()
        uninstall()

    return StepVariant(case, device), remove


# ----------------------------------------------------------------------------- compile counts


def compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the compile failed (not the mechanism): dynamo's and inductor's
    errors, and the recompile limit turned into an error by :func:`compile_scope`."""
    import torch._dynamo.exc as exc

    return (exc.TorchDynamoException, exc.FailOnRecompileLimitHit, StepError)


@contextlib.contextmanager
def compile_scope(case: Case) -> Iterator[None]:
    """Around a whole case: for a compiled case, dynamo starts from a clean state
    (``torch._dynamo.reset()``), hitting the recompile limit raises instead of silently running
    eager, and the compiled code is dropped at the end (nothing of a case outlives it)."""
    if case.compile != "on":
        yield
        return
    import torch._dynamo

    torch._dynamo.reset()
    # Older torch lacks the option (and then falls back to eager at the limit, silently).
    strict = {"fail_on_recompile_limit_hit": True}
    if not hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        strict = {}
    try:
        with torch._dynamo.config.patch(strict):
            yield
    finally:
        torch._dynamo.reset()


@dataclass(frozen=True)
class CompileCounts:
    """What dynamo did while a workload ran its first steps: frames it compiled (recompiles and
    the frames after graph breaks included), graph breaks, and recompiles."""

    compiled_frames: int
    graph_breaks: int
    recompiles: int


_COMPILE_ID = re.compile(r"(\d+)/(\d+)(?:_\d+)?$")


class CompileWatch:
    """Counts dynamo's work while it is entered (a context manager); ``counts`` holds the result
    after it is left (``None`` when not ``enabled``: a case without compile).

    ``compiled_frames`` and ``graph_breaks`` are the growth of dynamo's counters
    (``counters["frames"]["ok"]`` and the sum of ``counters["graph_break"]``). torch has no
    recompile counter: every dynamo compile starts with a compile id ``frame/n``, where ``n`` is
    how many times that frame (code object) was compiled before, so ``recompiles`` counts the
    compiles with ``n > 0`` (seen through ``torch._dynamo.callback``'s start callbacks): a
    recompile is a compile of a frame whose earlier code no longer passes its guards.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: CompileCounts | None = None
        self._ids: list[str] = []
        self._frames = self._breaks = 0

    def __enter__(self) -> CompileWatch:
        if self.enabled:
            from torch._dynamo.callback import callback_handler

            self._frames, self._breaks = self._counters()
            callback_handler.register_start_callback(self._on_start)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        from torch._dynamo.callback import callback_handler

        self.counts = self._read()
        with contextlib.suppress(ValueError):
            callback_handler.start_callbacks.remove(self._on_start)

    @staticmethod
    def _counters() -> tuple[int, int]:
        from torch._dynamo.utils import counters

        return int(counters["frames"]["ok"]), int(sum(counters["graph_break"].values()))

    def _on_start(self, args: Any) -> None:
        if getattr(args.callback_trigger, "name", "") == "DYNAMO":
            self._ids.append(str(args.compile_id))

    def _read(self) -> CompileCounts:
        frames, breaks = self._counters()
        recompiles = sum(
            1 for s in self._ids if (m := _COMPILE_ID.search(s)) and int(m.group(2)) > 0
        )
        return CompileCounts(frames - self._frames, breaks - self._breaks, recompiles)


def check_compiled(counts: CompileCounts) -> None:
    """Raise :class:`StepError` when nothing was compiled: the step would run eager."""
    if counts.compiled_frames == 0:
        raise StepError(
            "torch.compile compiled no frame in the case's first steps: the step would silently "
            "run eager"
        )


def axis_twin(case: Case) -> tuple[str, Case] | None:
    """The step axes ``case`` sets (``"checkpoint"``, ``"amp+compile"``) and its twin with them
    at their defaults: what those axes cost is timed against it. ``None`` when all are at their
    defaults."""
    axes = [axis for axis, values in STEP_AXES.items() if getattr(case, axis) != values[0]]
    if not axes:
        return None
    twin = case
    for axis in axes:
        twin = twin.axis_off(axis)
    return "+".join(axes), twin
