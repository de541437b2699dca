"""``compile`` ``on``: the function that runs forward and loss (``loss(model(inputs), targets)``
under the autocast, through the mechanism's wrappers) goes through ``torch.compile`` with the
default backend (inductor) and mode (``"default"``: no CUDA graphs, no autotuning).

Backward and the optimizer step stay outside it, as in most training scripts (AOTAutograd
compiles the backward of the compiled forward). Compiling the model object would compile
nothing here: the step never calls ``model.forward`` through our code path, it calls that
function. Each workload compiles its own copy of the function (a fresh code object), so that
dynamo's cache entries, guards and recompiles are the workload's own and not shared with a twin
built in the same process. The measurement hooks (saved-tensor hooks, the FLOP counter, the
profiler) are entered around the compiled call, never inside the compiled function.

Around the whole case (:func:`compile_scope`, in the pytest process and in every worker),
dynamo starts from a clean state and hitting the recompile limit raises. Dynamo's work over the
case's first steps is counted where those steps run (:class:`CompileWatch`: in this process, or
in each worker of a parallel case); the record holds rank 0's counts (every rank compiles the
same code), and a case where any rank compiled no frame is an error: its step would run eager.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..spec import Case
from .base import Effect, ForwardLoss, StepError

__all__ = [
    "COMPILE",
    "COMPILE_MODE",
    "Compile",
    "CompileCounts",
    "CompileWatch",
    "check_compiled",
    "compile_errors",
    "compile_scope",
]

#: ``torch.compile``'s mode (the default: inductor without CUDA graphs or autotuning).
COMPILE_MODE = "default"


def _own_copy(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` with a code object of its own: dynamo keeps compiled code, guards and recompile
    counts per code object, so each workload's compile stays its own."""
    code = fn.__code__.replace()
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def compile_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the compile failed (not the mechanism): dynamo's and inductor's
    errors, and the recompile limit turned into an error by :func:`compile_scope`."""
    import torch._dynamo.exc as exc

    return (exc.TorchDynamoException, exc.FailOnRecompileLimitHit, StepError)


@contextlib.contextmanager
def compile_scope(case: Case) -> Iterator[None]:
    """Around a whole compiled case: dynamo starts from a clean state (``torch._dynamo.reset()``),
    hitting the recompile limit raises instead of silently running eager, and the compiled code
    is dropped at the end (nothing of a case outlives it)."""
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
    after it is left (``None`` when not ``enabled``).

    ``compiled_frames`` and ``graph_breaks`` are the growth of dynamo's counters
    (``counters["frames"]["ok"]`` and the sum of ``counters["graph_break"]``). torch has no
    recompile counter: every dynamo compile starts with a compile id ``frame/n``, where ``n`` is
    how many times that frame (code object) was compiled before, so ``recompiles`` counts the
    compiles with ``n > 0`` (seen through ``torch._dynamo.callback``'s start callbacks): a
    recompile is a compile of a frame whose earlier code no longer passes its guards.
    """

    def __init__(self, enabled: bool = True) -> None:
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


class Compile(Effect):
    name = "compile"
    doc = "forward and loss through torch.compile (inductor, mode 'default')"
    order = 100  # outermost: it compiles the autocast too
    calibration_steps = 1  # a late freeze recompiles in its second step

    def scope(self, case: Case) -> contextlib.AbstractContextManager[object]:
        return compile_scope(case)

    def wrap_forward_loss(
        self, case: Case, fn: ForwardLoss, device: torch.device, *, eager: bool
    ) -> ForwardLoss:
        # The FLOP counter counts the eager step: inductor fuses and may decompose products
        # that a counter around compiled code would miss.
        if eager:
            return fn
        compiled: ForwardLoss = torch.compile(_own_copy(fn), mode=COMPILE_MODE)
        return compiled

    def watch_start(self, case: Case) -> CompileWatch:
        return CompileWatch().__enter__()

    def watch_stop(self, token: Any) -> dict[str, Any]:
        watch: CompileWatch = token
        watch.__exit__(None, None, None)
        assert watch.counts is not None
        return dataclasses.asdict(watch.counts)

    def watch_record(
        self, case: Case, ranks: Sequence[dict[str, Any]], extra_s: float | None
    ) -> dict[str, Any]:
        for counts in ranks:
            check_compiled(CompileCounts(**counts))
        return {"compile_s": extra_s, **ranks[0]}

    def failure(self, e: BaseException) -> str | None:
        if not isinstance(e, compile_errors()):
            return None
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        cause = e.__cause__ or getattr(e, "inner_exception", None)
        if cause is not None:  # dynamo's first line says only which backend raised
            message += f" {type(cause).__name__}: {str(cause).splitlines()[0]}"
        return f"compile failed: {message}"


COMPILE = Compile()
