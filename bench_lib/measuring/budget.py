"""How much time a case gets: warm-up, timed rounds, ratio pairs and the phase pass; or, in
smoke mode, only the verdict and two timed steps."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SMOKE_PAIRS", "SMOKE_ROUNDS", "SMOKE_STEPS", "Budget"]

#: Timed steps of a case in smoke mode, and the most ratio pairs it gets.
SMOKE_STEPS = 2
SMOKE_PAIRS = 2
#: Rounds of a decision group in smoke mode (no stop rule).
SMOKE_ROUNDS = 2


@dataclass(frozen=True)
class Budget:
    """How much time a case gets. ``rounds`` is sized to about ``target_time_s`` of timed steps,
    clamped to ``[min_rounds, max_rounds]``; the phase pass runs ``phase_reps`` steps.

    ``smoke``: does every combination run? The validity check, then :data:`SMOKE_STEPS` timed
    steps without warm-up or calibration, at most :data:`SMOKE_PAIRS` ratio pairs, and none of
    the FLOP, phase, memory, bytes-by-category and axis-twin passes (the runner's pass table
    says which pass runs in smoke mode; the fields of the others stay null)."""

    warmup_rounds: int = 3
    target_time_s: float = 0.5
    min_rounds: int = 5
    max_rounds: int = 200
    ratio_pairs: int = 15
    phase_reps: int = 10
    smoke: bool = False
    #: The decision groups' margin (``None``: 5% on CPU, 2% on CUDA) and time cap in seconds
    #: (see :mod:`.group`); ``fixed_rounds`` replaces the stop rule with that many rounds
    #: (``--bench-pairs``).
    margin: float | None = None
    group_cap_s: float = 20.0
    fixed_rounds: int | None = None
    #: Time each baseline against an identical twin (its A/A' noise floor). Without it, a
    #: baseline takes its values from the first decision group of its set-up that the run
    #: measures (``--bench-no-twin``: a big model cannot afford the twin's rounds).
    baseline_twin: bool = True
    #: The group's cap covers at least this many rounds (by the members' calibrated step
    #: times): where a step takes seconds, a cap in seconds would stop at the first look.
    cap_rounds: int = 0

    def __post_init__(self) -> None:
        if self.min_rounds < 1 or self.max_rounds < self.min_rounds:
            raise ValueError(
                f"rounds bounds [{self.min_rounds}, {self.max_rounds}] must satisfy 1 <= min <= max"
            )
        if min(self.ratio_pairs, self.phase_reps) < 1 or self.warmup_rounds < 0:
            raise ValueError(f"invalid budget {self}")
        if not self.target_time_s > 0:
            raise ValueError(f"target_time_s={self.target_time_s} must be > 0")

    @property
    def timed_warmup_rounds(self) -> int:
        """Untimed rounds before the timed ones (none in smoke mode)."""
        return 0 if self.smoke else self.warmup_rounds

    @property
    def pairs(self) -> int:
        """Interleaved ratio pairs (at most :data:`SMOKE_PAIRS` in smoke mode)."""
        return min(self.ratio_pairs, SMOKE_PAIRS) if self.smoke else self.ratio_pairs

    def rounds_for(self, step_seconds: float | None) -> int:
        """Timed rounds for a step of ``step_seconds`` (``None``: not calibrated, smoke mode)."""
        if self.smoke:
            return SMOKE_STEPS
        if step_seconds is None or step_seconds <= 0:
            return self.max_rounds
        wanted = math.ceil(self.target_time_s / step_seconds)
        return max(self.min_rounds, min(self.max_rounds, wanted))
