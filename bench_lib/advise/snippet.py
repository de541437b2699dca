"""The code (5 lines or fewer) that applies a recommended mechanism to a model's real blocks.

Plain Python: it writes text. The frozen modules are named by their real submodule paths, with
runs of a stack's layers as slices (``*model.get_submodule("bert.encoder.layer")[:6]``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_LINES", "frozen_expression", "snippet"]

MAX_LINES = 5


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def frozen_expression(blocks: Sequence[Sequence[str]], stacks: Sequence[str]) -> str:
    """A list expression of the frozen blocks' modules, ``model`` being the model."""
    items: list[str] = []
    by_stack: dict[str, list[int]] = {}
    for block in blocks:
        for name in block:
            parent, _, last = name.rpartition(".")
            if parent in stacks and last.isdigit():
                by_stack.setdefault(parent, []).append(int(last))
            else:
                items.append(f'model.get_submodule("{name}")')
    for stack, indices in by_stack.items():
        for lo, hi in _runs(indices):
            if hi - lo == 1:
                items.append(f'model.get_submodule("{stack}.{lo}")')
            else:
                start = "" if lo == 0 else str(lo)
                items.append(f'*model.get_submodule("{stack}")[{start}:{hi}]')
    return f"[{', '.join(items)}]"


def snippet(
    mechanism: str,
    blocks: Sequence[Sequence[str]],
    stacks: Sequence[str],
    globs: Sequence[str] = (),
) -> list[str]:
    """At most :data:`MAX_LINES` lines applying ``mechanism`` to the frozen ``blocks`` (or the
    parameters matching ``globs``) of ``model``; ``optimizer``/``loss`` are the user's."""
    if globs:
        pick = f"any(fnmatch.fnmatchcase(n, g) for g in {list(globs)!r})"
        frozen = [f"frozen = [p for n, p in model.named_parameters() if {pick}]"]
        modules = None
    else:
        frozen = [f"frozen = {frozen_expression(blocks, stacks)}"]
        modules = "frozen"
    ids = (
        "{id(p) for p in frozen}"
        if modules is None
        else "{id(p) for m in frozen for p in m.parameters()}"
    )
    if mechanism in ("requires_grad", "no_grad", "inference_mode"):
        if modules is None:
            lines = [*frozen, "for p in frozen:", "    p.requires_grad_(False)"]
        else:
            lines = [*frozen, "for m in frozen:", "    m.requires_grad_(False)"]
            if mechanism != "requires_grad":
                lines.append(f"    m.forward = torch.{mechanism}()(m.forward)")
        lines.append(
            "optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)"
        )
    elif mechanism == "optimizer_only":
        lines = [
            *frozen,
            f"skip = {ids}",
            "optimizer = torch.optim.AdamW(p for p in model.parameters() if id(p) not in skip)",
        ]
    elif mechanism == "backward_inputs":
        lines = [
            *frozen,
            f"skip = {ids}",
            "train = [p for p in model.parameters() if id(p) not in skip]",
            "optimizer = torch.optim.AdamW(train)",
            "loss.backward(inputs=train)  # in the training step",
        ]
    else:
        raise ValueError(
            f"mechanism={mechanism!r} has no snippet (choices: requires_grad, no_grad, "
            "inference_mode, optimizer_only, backward_inputs)"
        )
    assert len(lines) <= MAX_LINES, lines
    return lines
