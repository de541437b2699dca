"""Decision groups: the baseline and every mechanism of one set-up and frozen pattern, timed in
the same rounds, until precision decides.

A *group* is the cases that share every axis but the mechanism (the baseline, pattern
``none``, is a member of each group of its set-up). The question a group answers is "which
mechanism here", so its members are timed together:

* **Rounds.** Each round times one *value* of every member, in a balanced order (a Williams
  design: every member follows every other equally often across a cycle of orders, so carry-over
  from the previous member cancels), seeded and recorded. A value is :data:`VALUE_STEPS` steps of
  the member (more where its steps are short: a value lasts at least :data:`MIN_VALUE_S`),
  after :data:`WARM_STEPS` untimed steps whenever the member changes (so caches
  carry over equally: a step right after a switch pays the switch, and a 1-step value would pull
  every ratio towards 1). gc is off inside a value and collects the young generations between
  rounds; each step synchronizes its device.
* **Pairs.** Any two members form a pair: their per-round ratios, with the Hodges-Lehmann
  estimate and its 95% interval (:func:`~bench_lib.measuring.stats.hodges_lehmann`: robust to
  an outlier round like the median, and a third fewer rounds for the same width).
* **Stop rule.** At fixed looks (:data:`LOOKS` rounds) the group is *resolved* when every
  *needed* pair (the cheapest valid member against each other valid member) has an interval at
  most ``margin`` wide in full ((high - low) / ratio). It stops there when no needed pair's
  interval crosses an edge, ``1 - margin`` or ``1 + margin`` (a pair across an edge is a call
  another run may make the other way: the rounds go on, within the cap, until it clears or the
  cap is spent; it then counts as *borderline*). It stops unresolved when its time cap is spent.
  The cap is kept at the looks: a group stops at a look when the next look would end past the
  cap at the pace so far (only the first look may overrun it).
  Then each pair is classified once: **equivalent** when its interval lies inside
  ``1 +/- margin``, **distinct** otherwise (at that width a distinct interval excludes 1). The
  edge rule changes no call on identical twins: their intervals hold 1, far from the edges.

The clock is :class:`~bench_lib.measuring.stats.Clock` (tests replace it with a fake).
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import effects
from .budget import SMOKE_ROUNDS, Budget
from .caserun import CaseRun, is_oom, release
from .devices import DeviceUnavailable
from .spec import Case
from .stats import Clock, hodges_lehmann, median, timed_value
from .verify import Verdict

__all__ = [
    "LOOKS",
    "MAX_VALUE_STEPS",
    "MIN_VALUE_S",
    "TWIN",
    "VALUE_STEPS",
    "WARM_STEPS",
    "GroupResult",
    "MemberTiming",
    "PairResult",
    "classify",
    "crosses_edge",
    "default_margin",
    "design_label",
    "group_key",
    "groups_of",
    "pair_result",
    "steps_per_value",
    "time_group",
    "time_members",
    "williams_orders",
]

#: Steps in one timed value of a member, and untimed steps whenever the member changes. Chosen
#: by how well the ratio agrees with long interleaved blocks (see ``docs/measuring.md``).
VALUE_STEPS = 4
WARM_STEPS = 2
#: A value lasts at least this long for the fastest member (more steps, up to
#: :data:`MAX_VALUE_STEPS`): sub-millisecond steps in 4-step values carried 2-3 times the noise
#: per second of timing that 8 to 16 steps did (mlp d4 w64 b16, 0.5-0.8 ms a step: noise per
#: value 12% at 4 steps, 6% at 8, 4% at 16; mlp d8 w256 all-but-head, 1.1 ms: 4.6% at 4, 2.9%
#: at 8), while values of 20 ms or more gain nothing from being longer.
MIN_VALUE_S = 0.008
MAX_VALUE_STEPS = 32
#: The generations collected between rounds: what a round leaves is young; a full collection
#: would also walk every long-lived object of the process (0.17 s a round once transformers is
#: imported, against 10-300 ms rounds).
YOUNG = 1
#: A step at least this long is its own value, without warm steps: next to it a switch costs
#: nothing measurable (BERT d4 w128, about 60 ms a step, agreed with long blocks within 1.4%
#: with one-step values), and a big model cannot afford six steps per member per round.
LONG_STEP_S = 0.1
#: The rounds at which the stop rule looks (never in between: fewer looks, fewer chances for
#: noise to stop a group early).
LOOKS: tuple[int, ...] = (8, 12, 16, 24, 32, 48, 64)


def williams_orders(n: int, seed: int) -> list[list[int]]:
    """A Williams design for ``n`` members: ``n`` orders (``2n`` for odd ``n``) in which each
    member is preceded by every other member equally often; the members' labels are shuffled
    with ``seed``."""
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    first: list[int] = []
    lo, hi = 0, n - 1
    for i in range(n):
        if i % 2 == 0:
            first.append(lo)
            lo += 1
        else:
            first.append(hi)
            hi -= 1
    # The standard construction: row r is the first row shifted by r (mod n).
    orders = [[(x + r) % n for x in first] for r in range(n)]
    if n % 2 == 1:
        orders += [list(reversed(o)) for o in orders]
    labels = list(range(n))
    random.Random(seed).shuffle(labels)
    return [[labels[x] for x in o] for o in orders]


@dataclass(frozen=True)
class PairResult:
    """Member ``a`` over member ``b``: the median of the per-round ratios and its interval."""

    ratio: float
    low: float | None
    high: float | None

    @property
    def width(self) -> float:
        """Full relative width, (high - low) / ratio (infinite without an interval)."""
        if self.low is None or self.high is None:
            return math.inf
        return (self.high - self.low) / self.ratio


def pair_result(a: Sequence[float], b: Sequence[float]) -> PairResult:
    """The pair of two members' per-round values: the Hodges-Lehmann estimate of their log
    ratio and its 95% interval (:func:`~bench_lib.measuring.stats.hodges_lehmann`), back on
    the ratio scale."""
    logs = [math.log(x / y) for x, y in zip(a, b, strict=True)]
    centre, low, high = hodges_lehmann(logs)
    if math.isnan(low):
        return PairResult(math.exp(centre), None, None)
    return PairResult(math.exp(centre), math.exp(low), math.exp(high))


def crosses_edge(pair: PairResult, margin: float) -> bool:
    """Whether the interval holds ``1 - margin`` or ``1 + margin`` inside it: a call (equivalent
    or distinct) another run may make the other way."""
    if pair.low is None or pair.high is None:
        return False
    return any(pair.low < edge < pair.high for edge in (1 - margin, 1 + margin))


def classify(pair: PairResult, margin: float) -> str:
    """``equivalent`` (interval inside 1 +/- margin), ``distinct`` (interval excludes 1),
    ``unresolved`` (interval wider than the margin and holding 1: the rounds could not tell
    them apart, nor show them the same), or ``unknown`` (no interval). A resolved pair (width
    at most the margin) is always equivalent or distinct."""
    if pair.low is None or pair.high is None:
        return "unknown"
    if 1 - margin <= pair.low and pair.high <= 1 + margin:
        return "equivalent"
    if pair.high < 1 or pair.low > 1:
        return "distinct"
    return "unresolved"


@dataclass
class GroupResult:
    """What the group's rounds gave: each member's per-round values (seconds per step), the
    rounds, whether the needed pairs resolved, the widest needed pair, the design, why it
    stopped (a key of :data:`~bench_lib.vocab.GROUP_STOPS`) and how many needed pairs crossed an
    edge at the end."""

    names: list[str]
    values: dict[str, list[float]]
    rounds: int
    resolved: bool
    widest: float
    design: str
    seconds: float
    needed: list[tuple[str, str]] = field(default_factory=list)
    stop: str = "last_look"
    borderline: int = 0

    def pair(self, a: str, b: str) -> PairResult:
        return pair_result(self.values[a], self.values[b])


def design_label(
    seed: int,
    margin: float,
    cap_s: float,
    value_steps: Sequence[int] = (VALUE_STEPS,),
    warm: int = WARM_STEPS,
) -> str:
    """The ``timing_design`` text; ``value_steps`` are the members' value lengths (one, or the
    least and the most where they differ)."""
    lengths = (
        f"{value_steps[0]} steps" if len(set(value_steps)) == 1
        else f"{min(value_steps)}-{max(value_steps)} steps by member (at least "
        f"{MIN_VALUE_S * 1e3:g} ms each)"
    )  # fmt: skip
    return (
        f"williams seed {seed}; values of {lengths} after {warm} warm step(s) "
        f"at each switch; looks at {','.join(map(str, LOOKS))} rounds; margin {margin:g}; "
        f"cap {cap_s:g} s"
    )


def needed_pairs(
    names: Sequence[str], values: Mapping[str, Sequence[float]], valid: Mapping[str, bool]
) -> list[tuple[str, str]]:
    """The pairs the decision needs: the cheapest valid member (lowest median value) against
    each other valid member."""
    ok = [n for n in names if valid.get(n, False)]
    if len(ok) < 2:
        return []
    cheapest = min(ok, key=lambda n: median(values[n]))
    return [(n, cheapest) for n in ok if n != cheapest]


def time_group(
    steps: Mapping[str, Callable[[], object]],
    valid: Mapping[str, bool],
    *,
    margin: float,
    cap_s: float,
    seed: int = 0,
    looks: Sequence[int] = LOOKS,
    min_rounds: int | None = None,
    value_steps: int | Mapping[str, int] | None = None,
    warm_steps: int | None = None,
    timers: Mapping[str, Callable[[int, int], float]] | None = None,
) -> GroupResult:
    """Time the members ``steps`` (name -> one step, device-synchronized) in rounds until the
    needed pairs resolve at ``margin`` (and clear its edges), or until the next look would end
    past ``cap_s`` seconds (checked at each look; the first look always completes). ``valid``
    says which members may be recommended (only they make needed pairs). ``min_rounds``
    (default: the first look) is the least rounds run. ``timers`` (name -> ``(warm, n)`` ->
    seconds per step) time a member's value where its steps run (a parallel member's workers)
    instead of here. ``value_steps`` is the steps of a value, for all members or by member;
    ``warm_steps`` the untimed steps at each switch."""
    names = list(steps)
    if value_steps is None or isinstance(value_steps, int):
        value_n = dict.fromkeys(names, VALUE_STEPS if value_steps is None else value_steps)
    else:
        value_n = dict(value_steps)
    warm_n = WARM_STEPS if warm_steps is None else warm_steps
    orders = williams_orders(len(names), seed)
    values: dict[str, list[float]] = {n: [] for n in names}
    start = Clock.now()
    first_look = min_rounds if min_rounds is not None else looks[0]
    resolved = False
    widest = math.inf
    needed: list[tuple[str, str]] = []
    rounds = 0
    stop = "last_look"
    borderline = 0
    gc_was = gc.isenabled()
    try:
        while True:
            order = orders[rounds % len(orders)]
            gc.disable()
            for i in order:
                name = names[i]
                if timers is not None:
                    values[name].append(timers[name](warm_n, value_n[name]))
                else:
                    values[name].append(timed_value(steps[name], warm_n, value_n[name]))
            if gc_was:
                gc.enable()
            gc.collect(YOUNG)
            rounds += 1
            if rounds < first_look or (rounds not in looks and rounds < looks[-1]):
                continue
            needed = needed_pairs(names, values, valid)
            pairs = [pair_result(values[a], values[b]) for a, b in needed]
            widest = max((p.width for p in pairs), default=0.0)
            resolved = widest <= margin
            borderline = sum(crosses_edge(p, margin) for p in pairs)
            elapsed = Clock.now() - start
            if resolved and not borderline:
                stop = "settled"
            elif rounds >= looks[-1]:
                stop = "last_look"
            elif elapsed * min(x for x in looks if x > rounds) / rounds > cap_s:
                # The next look would end past the cap at this pace: stop at this one.
                stop = "borderline" if resolved else "cap"
            else:
                continue
            break
    finally:
        if gc_was:
            gc.enable()
    return GroupResult(
        names,
        values,
        rounds,
        resolved,
        widest,
        design_label(seed, margin, cap_s, sorted(set(value_n.values())), warm_n),
        Clock.now() - start,
        needed,
        stop,
        borderline,
    )


# ----------------------------------------------------------------------------- the members


#: The label of the baseline's identical twin in the baseline's own group (its ratio is the
#: noise floor: A against A').
TWIN = "none (twin)"


def group_key(case: Case) -> tuple[tuple[str, Any], ...]:
    """The decision group a case belongs to: every axis but the mechanism (the baseline,
    pattern ``none``, is a member of every group of its set-up, and has a group of its own
    with its twin)."""
    return tuple((k, v) for k, v in case.values().items() if k != "mechanism")


def groups_of(cases: Sequence[Case]) -> dict[tuple[tuple[str, Any], ...], list[Case]]:
    """``cases`` by decision group, in the order they come."""
    out: dict[tuple[tuple[str, Any], ...], list[Case]] = {}
    for c in cases:
        out.setdefault(group_key(c), []).append(c)
    return out


def label(case: Case) -> str:
    """A member's name in its group: its mechanism, with its adapter where it has one (the
    baseline never has: it is full fine-tuning)."""
    if case.adapter == "none":
        return case.mechanism
    return f"{case.mechanism}+{case.adapter}{case.lora_rank}"


@dataclass
class MemberTiming:
    """What a group's timing gave one member: its verdict (checked before the rounds), its
    per-step values (one per round), its ratio to every other member, the effects' counts over
    its first steps, and the group's summary; ``error`` where it failed before the rounds."""

    case: Case
    verdict: Verdict | None = None
    error: str | None = None
    oom: bool = False
    values: list[float] = field(default_factory=list)
    pairs: dict[str, PairResult] = field(default_factory=dict)
    ratio_samples: list[float] = field(default_factory=list)
    watch: dict[str, Any] = field(default_factory=dict)
    warmup_steps: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_pair(self) -> PairResult | None:
        return self.pairs.get("none") or self.pairs.get(TWIN)


def default_margin(device: str) -> float:
    """The margin when none is given: 5% on CPU (one pair's spread is about 5% on a shared VM:
    a full width of 5% takes about 24 rounds), 2% on CUDA."""
    return 0.02 if device == "cuda" else 0.05


def free_bytes(device: str) -> int:
    """Memory the device has free now: CUDA's free memory, or the host's available memory."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


#: The share of the free memory the members alive at once may take, by the baseline's measured
#: footprint (the other members freeze something, so they hold no more than it does).
ROOM_SHARE = 0.8


def chunk_size(footprint: int, free: int, others: int) -> int:
    """How many members beside the baseline may be alive at once: all ``others`` when
    ``others`` footprints of the baseline's size fit in :data:`ROOM_SHARE` of ``free``, else as
    many as fit (at least 1)."""
    fit = int(ROOM_SHARE * free // max(footprint, 1))
    return max(1, min(others, fit))


def time_members(
    cases: Sequence[Case],
    budget: Budget,
    start: Callable[[Case], CaseRun],
    *,
    seed: int = 0,
    free: Callable[[str], int] = free_bytes,
) -> dict[Case, MemberTiming]:
    """Check, build and time the members of one decision group together (``start`` launches a
    member's run: in this process or on its workers). The baseline is always a member; a group
    of the baseline alone times it against an identical twin. Members whose mechanism raises,
    or that fail, get their ``error`` and leave the others to be timed.

    The baseline starts first; the free memory it took (``free``, before and after) is its
    footprint. When every member fits beside it (:func:`chunk_size`), all are timed together;
    otherwise the others are started, timed beside the baseline and closed in chunks of as
    many as fit, so that no more is ever alive than the device holds (pairs within a chunk are
    direct; a pair across chunks has no direct ratio)."""
    members = list(dict.fromkeys([cases[0].baseline(), *cases]))
    labels = [label(c) for c in members]
    twin = len(members) == 1
    device = members[0].device
    margin = budget.margin if budget.margin is not None else default_margin(device)
    out = {c: MemberTiming(c) for c in members}
    runs: dict[str, CaseRun] = {}
    valid: dict[str, bool] = {}
    step_s: dict[str, float] = {}
    t0 = Clock.now()

    by_name = {name: out[c] for c, name in zip(members, labels, strict=True)}

    def begin(c: Case, name: str, timing: MemberTiming) -> None:
        _start_member(c, name, budget, start, timing, runs, valid, step_s)

    def close(name: str) -> None:
        runs.pop(name).close()
        release()

    with effects.case_scope(members[0]):
        try:
            before = free(device)
            begin(members[0], labels[0], out[members[0]])
            others = [(c, n, out[c]) for c, n in zip(members[1:], labels[1:], strict=True)]
            if twin and labels[0] in runs:
                others = [(members[0], TWIN, MemberTiming(members[0]))]
            size = len(others) or 1
            if not budget.smoke and labels[0] in runs:
                after = free(device)
                size = chunk_size(before - after, after, len(others))
            chunks = [others[i : i + size] for i in range(0, len(others), size)] or [[]]
            parts: list[GroupResult] = []
            cap_s = budget.group_cap_s / len(chunks)
            for chunk in chunks:
                for c, name, timing in chunk:
                    begin(c, name, timing)
                if len(runs) >= 2:
                    try:
                        parts.append(_time(runs, step_s, valid, budget, margin, seed, cap_s))
                    except DeviceUnavailable:
                        raise
                    except Exception as e:  # a member's run failed mid-rounds: none is timed
                        why = _message(members[0], e)
                        for name in runs:
                            failed = by_name.get(name)
                            if failed is not None and failed.error is None:
                                failed.error = f"the group's timed rounds failed: {why}"
                                failed.oom = is_oom(e)
                        break
                if len(chunks) > 1:
                    for _, name, _ in chunk:
                        if name in runs:
                            close(name)
            if parts:
                widest = max(p.widest for p in parts)
                design = (
                    "together" if len(chunks) == 1
                    else f"in {len(chunks)} chunks of up to {size} beside the baseline"
                )  # fmt: skip
                summary = {
                    "timing_design": f"{design}; {parts[0].design}",
                    "resolved": all(p.resolved for p in parts),
                    "group_rounds": sum(p.rounds for p in parts),
                    "group_widest": None if math.isinf(widest) else widest,
                    "group_stop": ", ".join(dict.fromkeys(p.stop for p in parts)),
                    "group_borderline": sum(p.borderline for p in parts),
                    "group_members": list(dict.fromkeys(n for p in parts for n in p.names)),
                    "group_seconds": round(Clock.now() - t0, 3),
                    "margin": margin,
                }
                for c, name in zip(members, labels, strict=True):
                    _fill(out[c], name, parts, summary, twin)
        finally:
            for run in runs.values():
                run.close()
            runs.clear()
            release()
    release(settle=True)  # the members are gone, and so is the scope (a compiled group's caches)
    return out


def _start_member(
    case: Case,
    name: str,
    budget: Budget,
    start: Callable[[Case], CaseRun],
    timing: MemberTiming,
    runs: dict[str, CaseRun],
    valid: dict[str, bool],
    step_s: dict[str, float],
) -> None:
    """Launch, check, build and warm one member; its failure is its own."""
    run: CaseRun | None = None
    try:
        run = start(case)
        if timing.verdict is None:
            timing.verdict = run.check()
        if timing.verdict.verdict == "error":
            run.close()
            return
        info = run.build()
        run.start_watch()
        if budget.smoke:  # one untimed step, so that the effects' watch sees the first step
            run.step()
            step_s_ = None
        else:
            step_s_ = run.calibrate()
        extra_s = run.compile_s if step_s_ is not None else None
        timing.watch = effects.watch_record(case, run.stop_watch(), extra_s)
        timing.warmup_steps = info.calibration_steps if step_s_ is not None else 0
        runs[name] = run
        valid[name] = timing.verdict.valid
        if step_s_ is not None:
            step_s[name] = step_s_
    except DeviceUnavailable:
        if run is not None:
            run.close()
        raise
    except Exception as e:
        timing.error = _message(case, e)
        timing.oom = is_oom(e)
        if run is not None:
            run.close()


def _message(case: Case, e: BaseException) -> str:
    """``e`` in one line, as the case's effects explain it where one claims it."""
    text = effects.failure_message(case, e) or f"{type(e).__name__}: {e}"
    return text.splitlines()[0][:500]


def _time(
    runs: Mapping[str, CaseRun],
    step_s: Mapping[str, float],
    valid: Mapping[str, bool],
    budget: Budget,
    margin: float,
    seed: int,
    cap_s: float,
) -> GroupResult:
    """The rounds of the members alive now (``runs``), until the stop rule or ``cap_s``."""
    looks: tuple[int, ...] = LOOKS
    if budget.smoke:
        looks = (SMOKE_ROUNDS,)
    elif budget.fixed_rounds is not None:
        looks = (budget.fixed_rounds,)
    alive = {n: step_s[n] for n in runs if n in step_s}
    first = min(max(looks[0], _min_rounds(budget, alive)), looks[-1])
    value_n, warm_n = _value_shape(alive)
    if budget.cap_rounds and alive:
        per_round = sum(s * (value_n[n] + warm_n) for n, s in alive.items())
        cap_s = max(cap_s, budget.cap_rounds * per_round)
    return time_group(
        {name: run.step for name, run in runs.items()}, valid, margin=margin, cap_s=cap_s,
        seed=seed, looks=looks, min_rounds=first,
        value_steps={n: value_n.get(n, VALUE_STEPS) for n in runs}, warm_steps=warm_n,
        timers={name: run.value for name, run in runs.items()},
    )  # fmt: skip


def _value_shape(step_s: Mapping[str, float]) -> tuple[dict[str, int], int]:
    """Each member's steps in a value, and the warm steps at each switch: one step without warm
    steps where the slowest member's step is long (:data:`LONG_STEP_S`), else
    :func:`steps_per_value` of each member's step after :data:`WARM_STEPS` (a value is seconds
    per step, so members with values of different lengths still pair)."""
    if step_s and max(step_s.values()) >= LONG_STEP_S:
        return dict.fromkeys(step_s, 1), 0
    return {n: steps_per_value(s) for n, s in step_s.items()}, WARM_STEPS


def steps_per_value(step_s: float) -> int:
    """Steps in a value of a member whose step takes ``step_s``: enough for
    :data:`MIN_VALUE_S`, at least :data:`VALUE_STEPS`, at most :data:`MAX_VALUE_STEPS`."""
    if step_s <= 0:
        return VALUE_STEPS
    return min(MAX_VALUE_STEPS, max(VALUE_STEPS, math.ceil(MIN_VALUE_S / step_s)))


def _min_rounds(budget: Budget, step_s: Mapping[str, float]) -> int:
    """The least rounds for ``--bench-time`` (``target_time_s``): enough that the member with the
    longest values gets that many seconds of them (steps take ``step_s``, from calibration)."""
    if budget.smoke or not step_s:
        return 1
    lengths, _ = _value_shape(step_s)
    longest = max(s * lengths[n] for n, s in step_s.items())  # the longest value's seconds
    return math.ceil(budget.target_time_s / longest) if longest > 0 else 1


def _fill(
    timing: MemberTiming,
    name: str,
    parts: Sequence[GroupResult],
    summary: dict[str, Any],
    twin: bool,
) -> None:
    """A member's values, and its pairs, each from the first part that timed both members."""
    mine = [p for p in parts if name in p.values]
    if not mine:
        return
    timing.values = list(mine[0].values[name])
    timing.summary = summary
    for part in mine:
        for other in part.values:
            if other != name and other not in timing.pairs:
                timing.pairs[other] = part.pair(name, other)
    reference = TWIN if twin else "none"
    for part in mine:
        if reference in part.values and reference != name:
            base = part.values[reference]
            own = part.values[name]
            timing.ratio_samples = [x / y for x, y in zip(own, base, strict=True)]
            break
