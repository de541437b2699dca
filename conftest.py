"""pytest wiring of freeze-bench: ``--bench-*`` options, case generation, JSON additions.

Options are validated when pytest configures itself, so a typo is a usage error naming the
option, the value and the choices, before anything runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bench_lib.journal import Journal, JournalError, read_journal
from bench_lib.measuring import env
from bench_lib.measuring.budget import Budget
from bench_lib.measuring.costmodel import load_measured_seconds, model_for
from bench_lib.measuring.devices import cuda_unavailable_reason
from bench_lib.measuring.spec import Case, CaseError
from bench_lib.measuring.sweep import (
    PROFILES,
    Filters,
    Skip,
    generate,
    parse_ints,
    parse_list,
    plan_shards,
    shard,
)
from bench_lib.vocab import (
    ADAPTERS,
    AMPS,
    CHECKPOINTS,
    COMPILES,
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PARALLEL,
    PATTERN_CHOICES,
)

# (option, Filters field, choices or None for integers, help)
_LIST_OPTIONS: tuple[tuple[str, str, tuple[str, ...] | None, str], ...] = (
    ("--bench-model", "models", MODELS, "model families"),
    ("--bench-depth", "depths", None, "depths (blocks)"),
    ("--bench-width", "widths", None, "widths (features / channels)"),
    ("--bench-batch", "batch_sizes", None, "batch sizes"),
    ("--bench-pattern", "patterns", PATTERN_CHOICES, "frozen-layer patterns"),
    ("--bench-mechanism", "mechanisms", MECHANISMS, "freeze mechanisms"),
    ("--bench-optimizer", "optimizers", OPTIMIZERS, "optimizers"),
    ("--bench-device", "devices", DEVICES, "devices"),
    ("--bench-dtype", "dtypes", DTYPES, "dtypes"),
    ("--bench-threads", "threads", None, "torch intra-op thread counts"),
    ("--bench-frozen-mode", "frozen_modes", FROZEN_MODES, "modes of the frozen blocks"),
    ("--bench-amp", "amps", AMPS, "autocast around forward and loss (float32 parameters)"),
    ("--bench-compile", "compiles", COMPILES, "torch.compile of the step's forward and loss"),
    ("--bench-checkpoint", "checkpoints", CHECKPOINTS, "activation checkpointing of blocks"),
    ("--bench-adapter", "adapters", ADAPTERS, "adapters on the trainable blocks (peft)"),
    ("--bench-lora-rank", "lora_ranks", None, "LoRA ranks (with --bench-adapter lora)"),
    ("--bench-parallel", "parallel", PARALLEL, "data-parallel set-ups (none: one process)"),
    ("--bench-world", "worlds", None, "world sizes (ranks) of the parallel set-ups"),
)


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


PLAN_KEY = pytest.StashKey[Plan]()
FOLDED_WHY = (
    "pattern 'none' with a freeze mechanism, or a frozen pattern with mechanism 'none', is the "
    "baseline: measured once per group, not once per combination"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("freeze-bench", "freeze-bench sweep (comma lists replace an axis)")
    group.addoption(
        "--bench-profile",
        default="default",
        metavar="NAME",
        help=f"profile: {', '.join(f'{k} ({p.description})' for k, p in PROFILES.items())}",
    )
    for opt, _, choices, what in _LIST_OPTIONS:
        hint = f" ({', '.join(choices)})" if choices else ""
        group.addoption(opt, default=None, metavar="LIST", help=f"comma list of {what}{hint}")
    group.addoption(
        "--bench-blocks",
        default=None,
        metavar="LIST",
        help="explicit frozen block indices, e.g. 1,3 (pattern 'explicit')",
    )
    group.addoption("--bench-seed", default=None, metavar="LIST", help="comma list of seeds")
    group.addoption(
        "--bench-freeze", default=None, metavar="GLOBS",
        help="comma list of globs matched against parameter names (pattern 'names'), "
        "e.g. 'bert.embeddings.*,*.bias'",
    )  # fmt: skip
    group.addoption(
        "--bench-model-factory", default=None, metavar="MODULE:FUNCTION",
        help="your own model: a function (in an importable module or a path.py) returning the "
        "model, its blocks and a batch maker; model 'factory' (the only one unless "
        "--bench-model is given)",
    )  # fmt: skip
    group.addoption(
        "--bench-shard",
        default=None,
        metavar="I/N",
        help="run shard I of N (0-based); a case stays with its baseline",
    )
    group.addoption(
        "--bench-pairs",
        default=None,
        metavar="N",
        help="interleaved baseline/case pairs per case (the profile's by default)",
    )
    group.addoption(
        "--bench-journal", default=None, metavar="PATH",
        help="append every finished case to this JSON-lines file at once "
        "(default: BENCHMARK_JSON.journal.jsonl when --benchmark-json is given)",
    )  # fmt: skip
    group.addoption(
        "--bench-resume", action="store_true", default=False,
        help="skip cases already in the journal and carry their results into the JSON",
    )  # fmt: skip
    group.addoption(
        "--bench-costs", default=None, metavar="PATH",
        help="a JSON or journal of an earlier run: fit the cost model that balances "
        "--bench-shard (and estimates the run's time) to its measured per-case seconds",
    )  # fmt: skip
    group.addoption(
        "--bench-time",
        default=None,
        metavar="SECONDS",
        help="target seconds of timed rounds per case (the profile's by default)",
    )


def _filters(config: pytest.Config) -> Filters:
    kw: dict[str, Any] = {}
    for opt, field, choices, _ in _LIST_OPTIONS:
        text = config.getoption(opt)
        if text is None:
            continue
        kw[field] = parse_list(opt, text, choices) if choices else parse_ints(opt, text)
    if (text := config.getoption("--bench-blocks")) is not None:
        kw["blocks"] = parse_ints("--bench-blocks", text, minimum=0)
    if (text := config.getoption("--bench-seed")) is not None:
        kw["seeds"] = parse_ints("--bench-seed", text, minimum=0)
    if (text := config.getoption("--bench-freeze")) is not None:
        kw["freeze"] = parse_list("--bench-freeze", text)
    if (text := config.getoption("--bench-model-factory")) is not None:
        if not text.strip():
            raise CaseError("--bench-model-factory='' is empty; give MODULE:FUNCTION")
        kw["factory"] = text.strip()
    return Filters(**kw)


def _budget(config: pytest.Config, budget: Budget) -> Budget:
    from dataclasses import replace

    if (text := config.getoption("--bench-pairs")) is not None:
        budget = replace(budget, ratio_pairs=parse_ints("--bench-pairs", text)[0])
    if (text := config.getoption("--bench-time")) is not None:
        try:
            seconds = float(text)
        except ValueError:
            raise CaseError(f"--bench-time={text!r} is not a number of seconds") from None
        if not seconds > 0:
            raise CaseError(f"--bench-time={text!r} must be > 0")
        budget = replace(budget, target_time_s=seconds)
    return budget


def _plan(config: pytest.Config) -> Plan:
    name = config.getoption("--bench-profile")
    if name not in PROFILES:
        raise CaseError(f"--bench-profile={name!r} is not one of: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    sweep = generate(profile, _filters(config))
    cases, skips = sweep.cases, sweep.skips
    budget = _budget(config, profile.budget)
    costs = config.getoption("--bench-costs")
    model, seconds = model_for(cases, budget, load_measured_seconds(costs) if costs else None)
    estimate = f"estimated {sum(seconds.values()):.0f} s for {len(cases)} cases ({model.source})"
    if (text := config.getoption("--bench-shard")) is not None:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise CaseError(f"--bench-shard={text!r} must look like I/N, e.g. 0/4") from None
        cases = shard(cases, i, n, seconds)
        loads = plan_shards(sweep.cases, n, seconds)
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


def _journal_path(config: pytest.Config) -> Path | None:
    if (path := config.getoption("--bench-journal")) is not None:
        return Path(path)
    # pytest-benchmark >= 5.3 gives a Path; older versions an open file (argparse.FileType).
    target = getattr(config.option, "benchmark_json", None)
    if target is None:
        return None
    name = target if isinstance(target, (str, os.PathLike)) else getattr(target, "name", None)
    return Path(f"{os.fspath(name)}.journal.jsonl") if name is not None else None


class _Session:
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
                planned = {c.id for c in plan.cases}
                self.resumed = [e for e in entries if e["extra_info"].get("case_id") in planned]

    def _header(self, config: pytest.Config) -> dict[str, Any]:
        bs = getattr(config, "_benchmarksession", None)
        return {
            "machine_info": bs.get_machine_info() if bs else env.machine_info(),
            "datetime": datetime.now(timezone.utc).isoformat(),
            "freeze_bench": self._summary(),
        }

    def _summary(self) -> dict[str, Any]:
        return {
            "profile": self.plan.profile,
            "budget": vars(self.plan.budget),
            "cases_planned": len(self.plan.cases),
            "combinations_folded": self.plan.folded,
            "combinations_folded_why": FOLDED_WHY,
            "cuda_unavailable_reason": self.plan.cuda_reason,
            "estimate": self.plan.estimate,
        }

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        done = {str(e["extra_info"]["case_id"]) for e in self.resumed}
        if not done:
            return
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            params = getattr(item, "callspec", None)
            case = params.params.get("case_params") if params else None
            case_id = Case.from_dict(case).id if case else None
            (drop if case_id in done else keep).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.journal_path is not None:
            self.journal = Journal(
                self.journal_path, self._header(session.config), resume=self.resume
            )

    def add_record(self, case: Case, record: dict[str, Any], entry: dict[str, Any] | None) -> None:
        """Keep a finished case: journal it at once; ``entry`` is pytest-benchmark's entry of a
        timed case, ``None`` for one that failed before its timed loop (JSON ``failed`` list)."""
        self.records.append(record)
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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "freeze_bench" in report.keywords and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            case_id = report.nodeid.partition("[")[2].removesuffix("]")
            self.skipped.append({"id": case_id, "reason": reason.removeprefix("Skipped: ")})

    def pytest_benchmark_update_machine_info(
        self, config: pytest.Config, machine_info: dict[str, Any]
    ) -> None:
        machine_info.update(env.machine_info())

    def pytest_benchmark_update_json(
        self, config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
    ) -> None:
        resumed_ok = [e for e in self.resumed if e.get("stats")]
        output_json["benchmarks"].extend(resumed_ok)
        output_json["freeze_bench"] = {
            **self._summary(),
            "skipped": self.skipped,
            "failed": [e for e in self.resumed if not e.get("stats")] + self.failed,
            "resumed": len(self.resumed),
            "journal": str(self.journal_path) if self.journal_path else None,
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """pytest-benchmark writes no JSON when no case was timed (all skipped or failed), and
        before 5.3 it has already truncated the ``--benchmark-json`` file. Write one with the
        skips and failures, so that the run still says what happened."""
        if self.journal is not None:
            self.journal.close()
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.resumed:
            # Everything planned was already in the journal: the run is complete, not empty.
            session.exitstatus = pytest.ExitCode.OK
        bs = getattr(session.config, "_benchmarksession", None)
        if bs is None or not getattr(bs, "json", None) or bs.benchmarks:
            return
        config = session.config
        commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
        output = config.hook.pytest_benchmark_generate_json(
            config=config, benchmarks=[], include_data=True,
            machine_info=bs.get_machine_info(), commit_info=commit_info,
        )  # fmt: skip
        config.hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=output)
        bs.save_json(output)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        stats = terminalreporter.stats
        ran = [r for r in stats.get("passed", []) if "freeze_bench" in r.keywords]
        if not ran and not self.skipped and not self.failed and not self.resumed:
            return
        failed = sum(1 for r in self.records_failed())
        terminalreporter.section("freeze-bench")
        terminalreporter.write_line(
            f"profile {self.plan.profile}: {len(ran)} cases measured, {failed} recorded as "
            f"oom/error, {len(self.skipped)} skipped, {len(self.resumed)} resumed from journal"
        )
        terminalreporter.write_line(f"plan: {self.plan.estimate}")
        if self.journal_path is not None:
            terminalreporter.write_line(f"journal: {self.journal_path}")
        if self.plan.cuda_reason:
            terminalreporter.write_line(f"CUDA cases skipped: {self.plan.cuda_reason}")
        for s in self.skipped:
            if s["reason"] != self.plan.cuda_reason:
                terminalreporter.write_line(f"skipped {s['id']}: {s['reason']}")

    def records_failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] != "ok"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "freeze_bench: a freeze-bench sweep case")
    try:
        plan = _plan(config)
    except CaseError as e:
        raise pytest.UsageError(f"freeze-bench: {e}") from None
    try:
        session = _Session(plan, _journal_path(config), config.getoption("--bench-resume"))
    except CaseError as e:
        raise pytest.UsageError(f"freeze-bench: {e}") from None
    config.stash[PLAN_KEY] = plan
    config.pluginmanager.register(session, "freeze-bench-session")


def pytest_report_header(config: pytest.Config) -> str | None:
    plan = config.stash.get(PLAN_KEY, None)
    return f"freeze-bench profile {plan.profile}: {plan.estimate}" if plan else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_params" not in metafunc.fixturenames:
        return
    plan = metafunc.config.stash[PLAN_KEY]
    params = []
    for case in plan.cases:
        marks = [pytest.mark.freeze_bench]
        if case.device == "cuda" and plan.cuda_reason:
            marks.append(pytest.mark.skip(reason=plan.cuda_reason))
        params.append(pytest.param(case.to_dict(), id=case.id, marks=marks))
    for skip in plan.skips:
        params.append(
            pytest.param(
                None,
                id=skip.id,
                marks=[pytest.mark.freeze_bench, pytest.mark.skip(reason=skip.reason)],
            )
        )
    metafunc.parametrize("case_params", params)


@pytest.fixture
def bench_budget(request: pytest.FixtureRequest) -> Budget:
    return request.config.stash[PLAN_KEY].budget


@pytest.fixture
def bench_session(request: pytest.FixtureRequest) -> _Session:
    session = request.config.pluginmanager.get_plugin("freeze-bench-session")
    assert isinstance(session, _Session)
    return session
