"""Device resolution, synchronization and thread pinning."""

from __future__ import annotations

import torch

__all__ = [
    "DeviceUnavailable",
    "cuda_unavailable_reason",
    "flush_denormals",
    "pin_threads",
    "resolve",
    "synchronize",
]


class DeviceUnavailable(RuntimeError):
    """The case's device does not exist on this machine; the message says why."""


def cuda_unavailable_reason() -> str | None:
    """``None`` when CUDA can be used, else a sentence saying why not."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"CUDA requested but this torch {torch.__version__} is a CPU-only build"
    return (
        f"CUDA requested but torch.cuda.is_available() is False "
        f"(torch {torch.__version__} built for CUDA {torch.version.cuda}: no driver or no GPU)"
    )


def resolve(name: str) -> torch.device:
    """``torch.device`` for ``'cpu'`` or ``'cuda'``; raises :class:`DeviceUnavailable`."""
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason:
            raise DeviceUnavailable(reason)
        return torch.device("cuda", torch.cuda.current_device())
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device={name!r} is not one of: cpu, cuda")


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU, where ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pin_threads(n: int) -> int:
    """Pin torch's intra-op thread pool to ``n`` threads, and flush denormals
    (:func:`flush_denormals`); return the thread count now in force."""
    flush_denormals()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def flush_denormals() -> bool:
    """Have the CPU treat denormal floats as zero (``torch.set_flush_denormal``); whether the
    CPU supports it (x86 with SSE3 does).

    A case trains one fixed batch for hundreds of steps (a group's rounds); its loss goes to 0
    and its gradients and optimizer moments into the denormal range, where x86 arithmetic is
    many times slower. Measured on the reference VM: the full-training MLP baseline (d8 w256
    b64, AdamW) took 4.8 ms a step for its first 600 steps, then 6.3-7.8 ms (0.001% of its
    gradients and parameters denormal); flushed, 5.0 ms throughout. The baseline, which trains
    everything, gets there first, so the time ratios of a long group moved (4.2x to 6.9x
    against a frozen all-but-head member), by how many rounds the group happened to run. A
    training loop on fresh batches never gets there."""
    return bool(torch.set_flush_denormal(True))
