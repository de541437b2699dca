"""pytest wiring of freeze-bench: ``--bench-*`` options, case generation, JSON additions.

Options are validated when pytest configures itself, so a typo is a usage error naming the
option, the value and the choices, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bench_lib import env
from bench_lib.devices import cuda_unavailable_reason
from bench_lib.runner import Budget
from bench_lib.spec import (
    DEVICES,
    DTYPES,
    FROZEN_MODES,
    MECHANISMS,
    MODELS,
    OPTIMIZERS,
    PATTERNS,
    Case,
    CaseError,
)
from bench_lib.sweep import PROFILES, Filters, Skip, generate, parse_ints, parse_list, shard

# (option, Filters field, choices or None for integers, help)
_LIST_OPTIONS: tuple[tuple[str, str, tuple[str, ...] | None, str], ...] = (
    ("--bench-model", "models", MODELS, "model families"),
    ("--bench-depth", "depths", None, "depths (blocks)"),
    ("--bench-width", "widths", None, "widths (features / channels)"),
    ("--bench-batch", "batch_sizes", None, "batch sizes"),
    ("--bench-pattern", "patterns", PATTERNS, "frozen-layer patterns"),
    ("--bench-mechanism", "mechanisms", MECHANISMS, "freeze mechanisms"),
    ("--bench-optimizer", "optimizers", OPTIMIZERS, "optimizers"),
    ("--bench-device", "devices", DEVICES, "devices"),
    ("--bench-dtype", "dtypes", DTYPES, "dtypes"),
    ("--bench-threads", "threads", None, "torch intra-op thread counts"),
    ("--bench-frozen-mode", "frozen_modes", FROZEN_MODES, "modes of the frozen blocks"),
)


@dataclass(frozen=True)
class Plan:
    profile: str
    cases: list[Case]
    skips: list[Skip]
    budget: Budget
    cuda_reason: str | None


PLAN_KEY = pytest.StashKey[Plan]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("freeze-bench", "freeze-bench sweep (comma lists replace an axis)")
    group.addoption(
        "--bench-profile", default="default", metavar="NAME",
        help=f"profile: {', '.join(f'{k} ({p.description})' for k, p in PROFILES.items())}",
    )
    for opt, _, choices, what in _LIST_OPTIONS:
        hint = f" ({', '.join(choices)})" if choices else ""
        group.addoption(opt, default=None, metavar="LIST", help=f"comma list of {what}{hint}")
    group.addoption("--bench-blocks", default=None, metavar="LIST",
                    help="explicit frozen block indices, e.g. 1,3 (pattern 'explicit')")
    group.addoption("--bench-seed", default=None, metavar="LIST", help="comma list of seeds")
    group.addoption("--bench-shard", default=None, metavar="I/N",
                    help="run shard I of N (0-based); a case stays with its baseline")
    group.addoption("--bench-pairs", default=None, metavar="N",
                    help="interleaved baseline/case pairs per case (the profile's by default)")
    group.addoption("--bench-time", default=None, metavar="SECONDS",
                    help="target seconds of timed rounds per case (the profile's by default)")


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
    cases, skips = generate(profile, _filters(config))
    if (text := config.getoption("--bench-shard")) is not None:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise CaseError(f"--bench-shard={text!r} must look like I/N, e.g. 0/4") from None
        cases = shard(cases, i, n)
    if not cases and not skips:
        raise CaseError("these --bench-* options select no case at all")
    needs_cuda = any(c.device == "cuda" for c in cases)
    return Plan(name, cases, skips, _budget(config, profile.budget),
                cuda_unavailable_reason() if needs_cuda else None)


class _Session:
    """Per-run state: the plan, and the skips seen (TestReport carries no config)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.skipped: list[dict[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "case_params" in report.keywords:
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
        output_json["freeze_bench"] = {
            "profile": self.plan.profile,
            "budget": vars(self.plan.budget),
            "cases_planned": len(self.plan.cases),
            "skipped": self.skipped,
            "cuda_unavailable_reason": self.plan.cuda_reason,
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.skipped and not terminalreporter.stats.get("passed"):
            return
        ran = [r for r in terminalreporter.stats.get("passed", []) if "case_params" in r.keywords]
        if not ran and not self.skipped:
            return
        terminalreporter.section("freeze-bench")
        terminalreporter.write_line(
            f"profile {self.plan.profile}: {len(ran)} cases measured, {len(self.skipped)} skipped"
        )
        if self.plan.cuda_reason:
            terminalreporter.write_line(f"CUDA cases skipped: {self.plan.cuda_reason}")
        for s in self.skipped:
            if s["reason"] != self.plan.cuda_reason:
                terminalreporter.write_line(f"skipped {s['id']}: {s['reason']}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "freeze_bench: a freeze-bench sweep case")
    try:
        plan = _plan(config)
    except CaseError as e:
        raise pytest.UsageError(f"freeze-bench: {e}") from None
    config.stash[PLAN_KEY] = plan
    config.pluginmanager.register(_Session(plan), "freeze-bench-session")


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
        params.append(pytest.param(None, id=skip.id, marks=pytest.mark.skip(reason=skip.reason)))
    metafunc.parametrize("case_params", params)


@pytest.fixture
def bench_budget(request: pytest.FixtureRequest) -> Budget:
    return request.config.stash[PLAN_KEY].budget
