"""How much time a case gets: warm-up, timed rounds, ratio pairs and the phase pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Budget"]


@dataclass(frozen=True)
class Budget:
    """How much time a case gets. ``rounds`` is sized to about ``target_time_s`` of timed steps,
    clamped to ``[min_rounds, max_rounds]``; the phase pass runs ``phase_reps`` steps."""

    warmup_rounds: int = 3
    target_time_s: float = 0.5
    min_rounds: int = 5
    max_rounds: int = 200
    ratio_pairs: int = 15
    phase_reps: int = 10

    def __post_init__(self) -> None:
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError(
                f"rounds bounds [{self.min_rounds}, {self.max_rounds}] must satisfy 1 <= min <= max"
            )
        if min(self.ratio_pairs, self.phase_reps) < 1 or self.warmup_rounds < 0:
            raise ValueError(f"invalid budget {self}")
        if not self.target_time_s > 0:
            raise ValueError(f"target_time_s={self.target_time_s} must be > 0")

    def rounds_for(self, step_seconds: float) -> int:
        if step_seconds <= 0:
            return self.max_rounds
        wanted = math.ceil(self.target_time_s / step_seconds)
        return max(self.min_rounds, min(self.max_rounds, wanted))
