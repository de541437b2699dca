"""pytest wiring of freeze-bench: the hooks only, each calling into
:mod:`bench_lib.measuring.session` (the options, the plan, the journal and resume, the JSON
additions and the summary live there, free of pytest).

Options are validated when pytest configures itself, so a typo is a usage error naming the
option, the value and the choices, before anything runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench_lib.measuring.budget import Budget
from bench_lib.measuring.session import OPTIONS, Plan, Session, journal_path, make_plan
from bench_lib.measuring.spec import Case, CaseError

PLAN_KEY = pytest.StashKey[Plan]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("freeze-bench", "freeze-bench sweep (comma lists replace an axis)")
    for o in OPTIONS:
        if o.flag:
            group.addoption(o.name, action="store_true", default=False, help=o.help)
        else:
            default = "default" if o.name == "--bench-profile" else None
            group.addoption(o.name, default=default, metavar=o.metavar, help=o.help)


class _Hooks:
    """The session's pytest hooks: pytest glue around :class:`Session`."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        done = self.session.done()
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

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        cases = []
        for item in session.items:
            params = getattr(item, "callspec", None)
            case = params.params.get("case_params") if params else None
            if case:
                cases.append(Case.from_dict(case))
        self.session.select(cases)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        bs = getattr(session.config, "_benchmarksession", None)
        self.session.start(bs.get_machine_info() if bs else None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "freeze_bench" in report.keywords and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.session.add_skip(report.nodeid.partition("[")[2].removesuffix("]"), reason)

    def pytest_benchmark_update_machine_info(
        self, config: pytest.Config, machine_info: dict[str, Any]
    ) -> None:
        from bench_lib.measuring import env

        machine_info.update(env.machine_info())

    def pytest_benchmark_update_json(
        self, config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
    ) -> None:
        self.session.update_json(output_json)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """pytest-benchmark writes no JSON when no case was timed (all skipped or failed), and
        before 5.3 it has already truncated the ``--benchmark-json`` file. Write one with the
        skips and failures, so that the run still says what happened."""
        self.session.close()
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.session.resumed:
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
        lines = self.session.summary_lines(len(ran))
        if lines:
            terminalreporter.section("freeze-bench")
            for line in lines:
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "freeze_bench: a freeze-bench sweep case")
    target = getattr(config.option, "benchmark_json", None)
    try:
        plan = make_plan(config.getoption)
        session = Session(
            plan, journal_path(config.getoption, target), config.getoption("--bench-resume")
        )
    except CaseError as e:
        raise pytest.UsageError(f"freeze-bench: {e}") from None
    config.stash[PLAN_KEY] = plan
    config.pluginmanager.register(_Hooks(session), "freeze-bench-session")


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
def bench_session(request: pytest.FixtureRequest) -> Session:
    hooks = request.config.pluginmanager.get_plugin("freeze-bench-session")
    assert isinstance(hooks, _Hooks)
    return hooks.session
