"""The work of a freeze-bench pytest session, free of pytest: the ``--bench-*`` options (derived
from the axis table), the plan (profile, filters, skips, budget, shards, time estimate), the
journal and resume, the JSON additions and the terminal summary.

``conftest.py`` holds only the pytest hooks, each a few lines that call into this module (as
pytest-benchmark splits ``plugin.py`` and ``session.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import precision
from ..axes import AXES
from ..journal import Journal, JournalError, read_journal
from . import env
from .budget import Budget
from .caserun import Launcher
from .devices import cuda_unavailable_reason
from .estimate import load_measured_seconds, model_for, one_time_costs
from .group import MemberTiming, group_key, groups_of, time_members
from .launcher import launcher_for
from .spec import Case, CaseError
from .sweep import PROFILES, Filters, Skip, generate, parse_ints, parse_list, plan_shards, shard

__all__ = [
    "FOLDED_WHY",
    "OPTIONS",
    "Option",
    "Plan",
    "Session",
    "journal_path",
    "make_plan",
    "options_markdown",
]

#: ``getoption(name)``: an option's value (pytest's ``config.getoption``).
GetOption = Callable[[str], Any]


@dataclass(frozen=True)
class Option:
    """One ``--bench-*`` command-line option."""

    name: str
    help: str
    metavar: str = "LIST"
    flag: bool = False


def _axis_options() -> list[Option]:
    out = []
    for a in AXES.values():
        if not a.option:
            continue
        hint = f" ({', '.join(a.values)})" if a.kind == "choice" else ""
        what = "" if a.kind == "text" else "comma list of "
        out.append(Option(a.option, f"{what}{a.doc}{hint}", a.metavar))
    return out


#: Every option: one per axis that declares one (:mod:`bench_lib.axes`), then the run's own.
OPTIONS: list[Option] = [
    Option("--bench-profile", "profile: " + ", ".join(
        f"{k} ({p.description})" for k, p in PROFILES.items()), "NAME"),
    *_axis_options(),
    Option("--bench-blocks", "explicit frozen block indices, e.g. 1,3 (pattern 'explicit')"),
    Option("--bench-shard", "run shard I of N (0-based); a case stays with its baseline", "I/N"),
    Option("--bench-pairs", "fixed rounds per decision group instead of the stop rule (and the "
           "interleaved pairs of the axis-twin pass)", "N"),
    Option("--bench-margin", "decision margin: a pair is equivalent when its interval lies inside "
           "1 +/- margin, and a group runs until its needed intervals are that narrow (default "
           "0.05 on CPU, 0.02 on CUDA)", "FRACTION"),
    Option("--bench-group-time", "time cap in seconds of one decision group's rounds (the "
           "profile's by default); a group stopped by it is recorded as unresolved", "SECONDS"),
    Option("--bench-group-rounds", "a group's time cap covers at least N rounds, by its members' "
           "calibrated step times (for a model whose step takes seconds)", "N"),
    Option("--bench-time", "target seconds of timed values per case: a group runs at least the "
           "rounds that give each member that much (the profile's by default)", "SECONDS"),
    Option("--bench-journal", "append every finished case to this JSON-lines file at once "
           "(default: BENCHMARK_JSON.journal.jsonl when --benchmark-json is given)", "PATH"),
    Option("--bench-resume", "skip cases already in the journal and carry their results into "
           "the JSON", flag=True),
    Option("--bench-costs", "a JSON or journal of an earlier run: fit the cost model that "
           "balances --bench-shard (and estimates the run's time) to its measured per-case "
           "seconds", "PATH"),
    Option("--bench-no-twin", "time each baseline in the first decision group of its set-up "
           "instead of against an identical twin (no A/A' noise floor; saves the twin's rounds "
           "on a big model)", flag=True),
    Option("--bench-smoke", "smoke mode: the verdict and two timed steps per case, no memory, "
           "FLOP or phase passes", flag=True),
]  # fmt: skip


@dataclass(frozen=True)
class Plan:
    profile: str
    folded: int
    cases: list[Case]
    skips: list[Skip]
    budget: Budget
    cuda_reason: str | None
    #: One line: the planned cases' estimated seconds, the cost model's source, and for a shard
    #: every shard's estimate and the imbalance left.
    estimate: str


FOLDED_WHY = (
    "pattern 'none' with a freeze mechanism, or a frozen pattern with mechanism 'none', is the "
    "baseline: measured once per group, not once per combination"
)


def filters_from(get: GetOption) -> Filters:
    """The command line's axis filters, each parsed by its axis's kind."""
    kw: dict[str, Any] = {}
    for a in AXES.values():
        if not a.option or (text := get(a.option)) is None:
            continue
        key = a.grid or a.name
        if a.kind == "text":
            if not text.strip():
                raise CaseError(f"{a.option}='' is empty; give {a.metavar}")
            kw[key] = text.strip()
        elif a.kind == "choice":
            kw[key] = parse_list(a.option, text, a.values)
        elif a.kind == "int":
            kw[key] = parse_ints(a.option, text, minimum=a.minimum)
        else:
            kw[key] = parse_list(a.option, text)
    if (text := get("--bench-blocks")) is not None:
        kw["blocks"] = parse_ints("--bench-blocks", text, minimum=0)
    return Filters(**kw)


def _positive_number(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CaseError(f"{option}={text!r} is not a number") from None
    if not value > 0:
        raise CaseError(f"{option}={text!r} must be > 0")
    return value


def budget_from(get: GetOption, budget: Budget) -> Budget:
    if (text := get("--bench-pairs")) is not None:
        pairs = parse_ints("--bench-pairs", text)[0]
        budget = replace(budget, ratio_pairs=pairs, fixed_rounds=pairs)
    if (text := get("--bench-margin")) is not None:
        margin = _positive_number("--bench-margin", text)
        if not margin < 1:
            raise CaseError(f"--bench-margin={text!r} must be a fraction below 1, e.g. 0.05")
        budget = replace(budget, margin=margin)
    if (text := get("--bench-group-time")) is not None:
        budget = replace(budget, group_cap_s=_positive_number("--bench-group-time", text))
    if (text := get("--bench-group-rounds")) is not None:
        budget = replace(budget, cap_rounds=parse_ints("--bench-group-rounds", text, minimum=1)[0])
    if (text := get("--bench-time")) is not None:
        budget = replace(budget, target_time_s=_positive_number("--bench-time", text))
    if get("--bench-smoke"):
        budget = replace(budget, smoke=True)
    if get("--bench-no-twin"):
        budget = replace(budget, baseline_twin=False)
    return budget


def make_plan(get: GetOption) -> Plan:
    """The run's plan from its options; raises :class:`CaseError` for bad input."""
    name = get("--bench-profile")
    if name not in PROFILES:
        raise CaseError(f"--bench-profile={name!r} is not one of: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    sweep = generate(profile, filters_from(get))
    cases, skips = sweep.cases, sweep.skips
    budget = budget_from(get, profile.budget)
    costs = get("--bench-costs")
    model, seconds = model_for(cases, budget, load_measured_seconds(costs) if costs else None)
    estimate = f"estimated {sum(seconds.values()):.0f} s for {len(cases)} cases ({model.source})"
    if (text := get("--bench-shard")) is not None:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise CaseError(f"--bench-shard={text!r} must look like I/N, e.g. 0/4") from None
        once = {c: one_time_costs(c) for c in cases}
        cases = shard(cases, i, n, seconds, once)
        loads = plan_shards(sweep.cases, n, seconds, once)
        estimate = (
            f"shard {i}/{n}: {len(cases)} cases, estimated {loads.loads[i]:.0f} s; all shards "
            f"{', '.join(f'{x:.0f}' for x in loads.loads)} s, imbalance "
            f"{loads.imbalance:.0%} ({model.source})"
        )
    if not cases and not skips:
        raise CaseError("these --bench-* options select no case at all")
    needs_cuda = any(c.device == "cuda" for c in cases)
    return Plan(
        name,
        len(sweep.folded),
        cases,
        skips,
        budget,
        cuda_unavailable_reason() if needs_cuda else None,
        estimate,
    )


def journal_path(get: GetOption, benchmark_json: Any) -> Path | None:
    """``--bench-journal``, else ``BENCHMARK_JSON.journal.jsonl`` (``benchmark_json`` is
    pytest-benchmark's option: a Path from 5.3 on, an open file before), else ``None``."""
    if (path := get("--bench-journal")) is not None:
        return Path(path)
    if benchmark_json is None:
        return None
    name = (
        benchmark_json
        if isinstance(benchmark_json, (str, os.PathLike))
        else getattr(benchmark_json, "name", None)
    )
    return Path(f"{os.fspath(name)}.journal.jsonl") if name is not None else None


class Session:
    """Per-run state: the plan, the journal, the skips and failures seen."""

    def __init__(self, plan: Plan, journal_path: Path | None, resume: bool) -> None:
        self.plan = plan
        self.journal_path = journal_path
        self.resume = resume
        self.journal: Journal | None = None
        self.resumed: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = []
        self.failed: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        #: The cases this run will measure (after -k, shards and resume), by decision group,
        #: and the timings of the groups timed but not yet consumed by all their members.
        self.groups: dict[tuple[tuple[str, Any], ...], list[Case]] = groups_of(plan.cases)
        self._timings: dict[Case, MemberTiming] = {}
        #: Parallel cases run on workers shared by their set-up (made at the first one), and
        #: the cases of each set-up not yet recorded (its workers stop with the last).
        self._shared: Launcher | None = None
        self._pending: dict[Case, int] = {}
        if resume:
            if journal_path is None:
                raise CaseError(
                    "--bench-resume needs a journal: --bench-journal or --benchmark-json"
                )
            if journal_path.exists():
                try:
                    entries = read_journal(journal_path).entries
                except (JournalError, OSError) as e:
                    raise CaseError(f"--bench-resume: {e}") from None
                # Carry over only this run's cases: a journal written with other options may
                # hold cases this run does not plan.
                # A group half in the journal is timed again whole: its members are timed
                # together, so a member's numbers only mean something beside the others'.
                journaled = {e["extra_info"].get("case_id") for e in entries}
                complete = {
                    c.id
                    for members in groups_of(plan.cases).values()
                    if all(m.id in journaled for m in members)
                    for c in members
                }
                self.resumed = [e for e in entries if e["extra_info"].get("case_id") in complete]

    def select(self, cases: list[Case]) -> None:
        """The cases that will run (pytest's items after -k and resume): groups form among
        them only."""
        self.groups = groups_of(cases)
        self._pending = dict(Counter(c.baseline() for c in cases if c.is_parallel))

    def launcher(self, case: Case) -> Launcher:
        """Where ``case`` runs: in this process, or, for a parallel case, on the workers its
        set-up shares (:class:`~.parallel.coordinator.TorchLauncher` with ``shared``)."""
        if not case.is_parallel:
            return launcher_for(case)
        if self._shared is None:
            from .parallel.coordinator import TorchLauncher  # torch.distributed where used

            self._shared = TorchLauncher(shared=True)
        return self._shared

    def timing(self, case: Case, budget: Budget, start: Callable[[Case], Any]) -> MemberTiming:
        """``case``'s timing from its decision group, timed the first time one of its members
        asks (``start`` launches a member's run)."""
        if case not in self._timings:
            key = group_key(case)
            members = self.groups.get(key, [case])
            if not budget.baseline_twin and members == [case] and case == case.baseline():
                # The first other group of its set-up: the baseline is a member of each.
                others = (m for k, m in self.groups.items() if k != key and m[0].baseline() == case)
                members = next(others, members)
            self._timings.update(time_members(members, budget, start))
        return self._timings.pop(case)

    def done(self) -> set[str]:
        """The ids of the cases already in the journal (resumed: not run again)."""
        return {str(e["extra_info"]["case_id"]) for e in self.resumed}

    def summary(self) -> dict[str, Any]:
        return {
            "profile": self.plan.profile,
            "budget": vars(self.plan.budget),
            "cases_planned": len(self.plan.cases),
            "combinations_folded": self.plan.folded,
            "combinations_folded_why": FOLDED_WHY,
            "cuda_unavailable_reason": self.plan.cuda_reason,
            "estimate": self.plan.estimate,
        }

    def start(self, machine_info: dict[str, Any] | None) -> None:
        """Open the journal, with the run's header."""
        if self.journal_path is None:
            return
        header = {
            "machine_info": machine_info if machine_info is not None else env.machine_info(),
            "datetime": datetime.now(timezone.utc).isoformat(),
            "freeze_bench": self.summary(),
        }
        self.journal = Journal(self.journal_path, header, resume=self.resume)

    def add_record(self, case: Case, record: dict[str, Any], entry: dict[str, Any] | None) -> None:
        """Keep a finished case: journal it at once; ``entry`` is pytest-benchmark's entry of a
        timed case, ``None`` for one that failed before its timed loop (JSON ``failed`` list)."""
        self.records.append(record)
        setup = case.baseline()
        if setup in self._pending:
            self._pending[setup] -= 1
            if self._pending[setup] <= 0 and self._shared is not None:
                self._shared.close()  # the set-up's last case: its workers stop
        if entry is None:
            entry = {
                "name": case.id,
                "group": case.baseline().id,
                "params": {"case_params": case.to_dict()},
                "extra_info": record,
                "stats": None,
            }
            self.failed.append(entry)
        if self.journal is not None:
            self.journal.append(entry)

    def add_skip(self, case_id: str, reason: str) -> None:
        self.skipped.append({"id": case_id, "reason": reason.removeprefix("Skipped: ")})

    def update_json(self, output_json: dict[str, Any]) -> None:
        """Add the resumed cases and the run's own section to pytest-benchmark's JSON."""
        resumed_ok = [e for e in self.resumed if e.get("stats")]
        output_json["benchmarks"].extend(resumed_ok)
        output_json["freeze_bench"] = {
            **self.summary(),
            "skipped": self.skipped,
            "failed": [e for e in self.resumed if not e.get("stats")] + self.failed,
            "resumed": len(self.resumed),
            "journal": str(self.journal_path) if self.journal_path else None,
            "precision": [
                {**dataclasses.asdict(p), "share": p.share} for p in precision.by_setup(self._all())
            ],
        }

    def _all(self) -> list[dict[str, Any]]:
        """Every record of the run: measured now, and resumed from the journal."""
        return [*self.records, *(e["extra_info"] for e in self.resumed)]

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
        if self.journal is not None:
            self.journal.close()

    def summary_lines(self, measured: int) -> list[str]:
        """The terminal summary's lines (none when nothing of freeze-bench ran)."""
        if not measured and not self.skipped and not self.failed and not self.resumed:
            return []
        failed = sum(1 for r in self.records if r["status"] != "ok")
        lines = [
            f"profile {self.plan.profile}: {measured} cases measured, {failed} recorded as "
            f"oom/error, {len(self.skipped)} skipped, {len(self.resumed)} resumed from journal",
            f"plan: {self.plan.estimate}",
        ]
        lines += precision.summary_lines(self._all())
        if self.journal_path is not None:
            lines.append(f"journal: {self.journal_path}")
        if self.plan.cuda_reason:
            lines.append(f"CUDA cases skipped: {self.plan.cuda_reason}")
        lines += [
            f"skipped {s['id']}: {s['reason']}"
            for s in self.skipped
            if s["reason"] != self.plan.cuda_reason
        ]
        return lines


def options_markdown() -> str:
    """The docs' options table: the axes' options (from the axis table), then the run's."""
    from ..axes import options_markdown as axis_rows

    rows = [axis_rows()]
    for o in OPTIONS:
        if any(a.option == o.name for a in AXES.values()):
            continue
        value = "a flag" if o.flag else o.metavar
        rows.append(f"| `{o.name}` | {o.help}: {value} | - |")
    return "\n".join(rows)
