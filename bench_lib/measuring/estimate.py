"""How long a case will take: an estimate from its sizes, or a fit to an earlier run's times.

Used to split a sweep into shards of about equal time (``--bench-shard``) and to print the
planned run's estimated duration. Plain Python and numpy; it never builds a model.

A case runs about ``steps(case)`` training steps in all (validity check and its reference,
calibration, timed rounds, interleaved pairs of case and baseline, the FLOP, phase and memory
passes), so its seconds are ``overhead + steps * (step_overhead + flops * seconds_per_flop)``,
with the timed rounds sized from the step time exactly as :class:`Budget` sizes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..journal import JournalError, parse_journal
from .budget import SMOKE_ROUNDS, Budget
from .effects import active as effects_active
from .group import WARM_STEPS, steps_per_value
from .spec import Case, CaseError

__all__ = [
    "DEFAULT_MODELS",
    "PARALLEL_OVERHEAD_S",
    "CostModel",
    "forward_flops",
    "load_measured_seconds",
    "model_for",
    "one_time_costs",
]

#: Seconds a parallel case spends outside its steps: starting its workers (fresh interpreters
#: importing torch, DDP's import of torch._dynamo, the rendezvous), the first use of each pass
#: in them, and stopping them (measured on the 2-core CI machine: 3-4 s).
PARALLEL_OVERHEAD_S = 4.0

#: What a process pays once, by kind, the first time a case of that kind runs in it (CPU,
#: measured on the 2-core reference VM: two shards of the quick profile estimated equal took
#: 74 s and 36 s; the one with the compiled cases spent 17 s more outside its cases' passes,
#: while inductor's compile workers started beside them).
ONE_TIME_S: dict[str, float] = {"compile": 17.0, "parallel": 2.0}


def one_time_costs(case: Case) -> dict[str, float]:
    """The one-time costs ``case`` needs of its process, by kind (see :data:`ONE_TIME_S`)."""
    out = {}
    if case.compile != "off":
        out["compile"] = ONE_TIME_S["compile"]
    if case.is_parallel:
        out["parallel"] = ONE_TIME_S["parallel"]
    return out


#: Steps a case runs outside its timed rounds: validity check (3 steps and 3 reference
#: passes), calibration of the case and of its baseline twin (2 + 2), FLOPs (1 + 1 for a new
#: baseline), memory and bytes-by-category passes (2).
_FIXED_STEPS = 16


def forward_flops(case: Case) -> float:
    """Forward FLOPs of one step from the sizes (matrix products only; a close estimate for the
    built-in families, a width-squared rule of thumb for any other)."""
    b, w, d = case.batch_size, case.width, case.depth
    seq = case.option("seq_len", 32)
    if case.model == "mlp":
        return 2.0 * b * w * w * d
    if case.model == "transformer":
        return d * (24.0 * b * seq * w * w + 4.0 * b * seq * seq * w)
    if case.model == "xy":
        n_x = max(1, d // 2)
        encoder = 24.0 * b * seq * w * w + 4.0 * b * seq * seq * w
        return n_x * encoder + 2.0 * b * w * w * (d - n_x)
    if case.model == "cnn":
        side = case.option("image_size", 16)
        return 2.0 * b * 9 * side * side * w * (3 + w * (d - 1))
    if case.model in ("bert", "gpt2"):
        vocab = case.option("vocab_size", 1024)
        layers = d * (24.0 * b * seq * w * w + 4.0 * b * seq * seq * w)
        return layers + (2.0 * b * seq * w * vocab if case.model == "gpt2" else 0.0)
    if case.model == "vit":
        side, patch = case.option("image_size", 32), case.option("patch_size", 4)
        tokens = (side // patch) ** 2 + 1
        embed = 2.0 * b * (tokens - 1) * 3 * patch * patch * w
        return embed + d * (24.0 * b * tokens * w * w + 4.0 * b * tokens * tokens * w)
    if case.model == "resnet":
        # Stem (7x7 conv at half the side), then bottleneck layers: each costs about
        # 2 * side_s^2 * 17 * c_s^2, and side_s * c_s is the same at every stage (the side
        # halves as the channels double), so every layer costs what one of stage 0 does.
        side = case.option("image_size", 32)
        stem = 2.0 * (side / 2) ** 2 * 3 * 49 * w
        return b * (stem + d * 34.0 * (side / 4) ** 2 * w * w)
    return 2.0 * b * seq * w * w * 12 * d


#: Rounds a decision group usually needs at the default margin on the reference machine.
EXPECTED_ROUNDS = 24


@dataclass(frozen=True)
class CostModel:
    """Seconds of a case: ``overhead_s + steps * (step_overhead_s + 3 * forward FLOPs *
    seconds_per_flop)`` (a step costs about three forwards)."""

    overhead_s: float
    step_overhead_s: float
    seconds_per_flop: float
    source: str

    def step_seconds(self, case: Case) -> float:
        return self.step_overhead_s + 3.0 * forward_flops(case) * self.seconds_per_flop

    def steps(self, case: Case, budget: Budget) -> int:
        """Steps of a case: its share of its decision group's rounds (each member runs
        ``WARM_STEPS + steps_per_value(step)`` steps a round; a group of ``m`` members also
        times its baseline, so a member's share is about ``(m + 1) / m`` of its own; 1.25 for the
        typical 4 to 6 members), the rounds expected at the margin (or the fixed rounds), the
        measurement passes and its calibration."""
        if budget.smoke:
            rounds = SMOKE_ROUNDS
        elif budget.fixed_rounds is not None:
            rounds = budget.fixed_rounds
        else:
            rounds = EXPECTED_ROUNDS
        group = math.ceil(1.25 * rounds * (steps_per_value(self.step_seconds(case)) + WARM_STEPS))
        passes = 0 if budget.smoke else budget.warmup_rounds + budget.phase_reps + _FIXED_STEPS
        twin = 2 * budget.ratio_pairs if any(e.twin for e in effects_active(case)) else 0
        return group + passes + twin

    def seconds(self, case: Case, budget: Budget) -> float:
        launch = PARALLEL_OVERHEAD_S if case.is_parallel else 0.0
        return launch + self.overhead_s + self.steps(case, budget) * self.step_seconds(case)

    def fit(self, measured: Mapping[Case, float], budget: Budget) -> CostModel:
        """Least-squares refit of the overhead and the per-FLOP time to measured case seconds
        (``pass_seconds`` totals); this model where fewer than 3 cases are known."""
        if len(measured) < 3:
            return self
        rows, ys = [], []
        for case, seconds in measured.items():
            steps = self.steps(case, budget)
            rows.append([1.0, steps * 3.0 * forward_flops(case)])
            launch = PARALLEL_OVERHEAD_S if case.is_parallel else 0.0
            ys.append(seconds - steps * self.step_overhead_s - launch)
        coef, *_ = np.linalg.lstsq(np.asarray(rows), np.asarray(ys), rcond=None)
        overhead, per_flop = float(coef[0]), float(coef[1])
        if not (math.isfinite(overhead) and math.isfinite(per_flop)) or per_flop <= 0:
            return self
        return CostModel(
            max(0.0, overhead), self.step_overhead_s, per_flop, f"fitted to {len(measured)} cases"
        )


#: Estimates from sizes when no earlier run is given. CPU: one thread at about 20 GFLOP/s and
#: 0.3 s of fixed passes per case (measured on the 2-core CI machine, quick and default
#: profiles). CUDA: about 40 TFLOP/s in float32 on an H100-class GPU and 1 s of fixed passes.
DEFAULT_MODELS: dict[str, CostModel] = {
    "cpu": CostModel(0.3, 5e-4, 1 / 20e9, "estimated from sizes (CPU, one thread)"),
    "cuda": CostModel(1.0, 3e-4, 1 / 40e12, "estimated from sizes (H100-class GPU)"),
}


def _records(path: Path) -> Iterable[Mapping[str, Any]]:
    text = path.read_text()
    if path.name.endswith(".jsonl"):
        for entry in parse_journal(text, str(path)).entries:
            yield entry["extra_info"]
        return
    data = json.loads(text)
    for bench in data.get("benchmarks", []):
        yield bench.get("extra_info", {})


def load_measured_seconds(path: str | Path) -> dict[str, float]:
    """Case id -> measured seconds (the sum of ``pass_seconds``) from a pytest-benchmark JSON
    file or a journal of an earlier run. Raises :class:`CaseError` naming the file."""
    p = Path(path)
    try:
        records = list(_records(p))
    except (OSError, ValueError, JournalError) as e:
        raise CaseError(f"--bench-costs={str(path)!r}: {e}".splitlines()[0]) from None
    out = {}
    for r in records:
        passes = r.get("pass_seconds")
        if isinstance(passes, Mapping) and passes and r.get("case_id"):
            out[str(r["case_id"])] = float(sum(passes.values()))
    if not out:
        raise CaseError(
            f"--bench-costs={str(path)!r} has no case with pass_seconds (a run of schema 2 or "
            "later is needed)"
        )
    return out


def model_for(
    cases: Sequence[Case], budget: Budget, measured: Mapping[str, float] | None
) -> tuple[CostModel, dict[Case, float]]:
    """The cost model for ``cases`` (fitted to ``measured`` where given) and each case's
    seconds: measured where known, else the model's estimate."""
    device = cases[0].device if cases else "cpu"
    model = DEFAULT_MODELS.get(device, DEFAULT_MODELS["cpu"])
    known = {c: measured[c.id] for c in cases if measured and c.id in measured}
    model = model.fit(known, budget)
    return model, {c: known.get(c, model.seconds(c, budget)) for c in cases}
