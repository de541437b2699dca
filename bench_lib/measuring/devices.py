"""Device resolution, synchronization and thread pinning."""

from __future__ import annotations

import torch

__all__ = ["DeviceUnavailable", "cuda_unavailable_reason", "pin_threads", "resolve", "synchronize"]


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
    """Pin torch's intra-op thread pool to ``n`` threads; return the count now in force."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
