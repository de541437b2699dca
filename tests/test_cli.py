"""cli.py: the report and compare commands end to end, exit codes, and what is (not) written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench_lib.analysis.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main

FIXTURES = Path(__file__).parent / "fixtures"
CPU = FIXTURES / "cpu_run.json"
ROOT = Path(__file__).resolve().parents[1]


def _listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_report_writes_markdown_figures_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["report", str(CPU), "-o", str(out)]) == EXIT_OK
    names = _listing(out)
    assert "report.md" in names and "results.csv" in names
    md = (out / "report.md").read_text(encoding="utf-8")
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).read_bytes().startswith(b"\x89PNG"), link
    assert not [n for n in names if n.startswith(".freeze-bench-")]  # no temporary left
    csv_lines = (out / "results.csv").read_text(encoding="utf-8").splitlines()
    assert len(csv_lines) == 1 + 25


def test_report_accepts_journals_and_several_files(tmp_path: Path) -> None:
    journal = FIXTURES / "cpu_run.json.journal.jsonl"
    crashed = FIXTURES / "crashed.journal.jsonl"
    out = tmp_path / "out"
    assert main(["report", str(journal), str(crashed), "-o", str(out)]) == EXIT_OK
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.count("(journal)") == 2
    assert "journal line 6 is incomplete (the run stopped mid-write)" in md


def test_compare_writes_markdown_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code = main(["compare", str(CPU), str(FIXTURES / "cuda_run.json"), "-o", str(out)])
    assert code == EXIT_OK
    assert _listing(out) == ["compare-by-mechanism.png", "compare-medians.png", "compare.md"]
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "Of 25 cases in both runs, time ratio to the baseline: 0 lower" in md


def test_compare_ignore_none_matches_on_case_id(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", str(CPU), str(FIXTURES / "cuda_run.json"), "-o", str(out)]
    assert main([*args, "--ignore", "none"]) == EXIT_OK
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "Of 0 cases in both runs" in md and "matched on their full identity" in md


# ---------------------------------------------------------------------------- input problems


def _cut(path: Path) -> None:
    path.write_text(CPU.read_text(encoding="utf-8")[:3000], encoding="utf-8")


def _foreign(path: Path) -> None:
    path.write_text(json.dumps({"tests": [], "created": "today"}), encoding="utf-8")


def _future(path: Path) -> None:
    doc = json.loads(CPU.read_text(encoding="utf-8"))
    for b in doc["benchmarks"]:
        b["extra_info"]["schema_version"] = 99
    path.write_text(json.dumps(doc), encoding="utf-8")


def _nothing(path: Path) -> None:
    pass


def _empty(path: Path) -> None:
    path.write_text("", encoding="utf-8")


PROBLEMS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing": (_nothing, "no such file"),
    "empty": (_empty, "empty file"),
    "truncated": (_cut, "truncated JSON"),
    "not pytest-benchmark": (_foreign, "not pytest-benchmark output"),
    "unknown schema": (_future, "schema_version 99"),
}


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_input_problems_exit_3_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, problem: str
) -> None:
    make, words = PROBLEMS[problem]
    bad = tmp_path / "bad.json"
    make(bad)
    out = tmp_path / "out"
    inputs = [str(bad)] if command == "report" else [str(CPU), str(bad)]
    assert main([command, *inputs, "-o", str(out)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"freeze-bench: {bad}: ") and words in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written, not even the directory


def test_output_over_an_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "results.csv"  # an input that happens to bear an output's name
    shutil.copy(CPU, victim)
    before = victim.read_bytes()
    assert main(["report", str(victim), "-o", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "would overwrite this input" in err
    assert victim.read_bytes() == before
    assert _listing(out) == ["results.csv"]


def test_output_that_is_an_input_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run.json"
    shutil.copy(CPU, run)
    assert main(["report", str(run), "-o", str(run)]) == EXIT_USAGE
    assert "-o must be a directory" in capsys.readouterr().err
    assert run.read_bytes() == CPU.read_bytes()


def test_input_inside_the_output_directory_is_fine(tmp_path: Path) -> None:
    journal = FIXTURES / "cpu_run.json.journal.jsonl"
    shutil.copy(journal, tmp_path / "run.json")
    assert main(["report", str(tmp_path / "run.json"), "-o", str(tmp_path)]) == EXIT_OK
    assert (tmp_path / "run.json").read_bytes() == journal.read_bytes()
    assert (tmp_path / "report.md").exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["report"],
        ["report", str(CPU)],  # -o is required
        ["frobnicate", str(CPU), "-o", "x"],
        ["compare", str(CPU), "-o", "x"],  # NEW is missing
        ["compare", str(CPU), str(CPU), "-o", "x", "--ignore", "colour"],
        ["compare", str(CPU), str(CPU), "-o", "x", "--alpha", "2"],
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == EXIT_USAGE
    assert "error:" in capsys.readouterr().err
    assert not Path("x").exists()


def test_colliding_identity_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A base run holding cpu and cuda cases: ignoring the device makes pairs of them collide.
    base = tmp_path / "both.json"
    doc = json.loads(CPU.read_text(encoding="utf-8"))
    cuda = json.loads((FIXTURES / "cuda_run.json").read_text(encoding="utf-8"))
    doc["benchmarks"] += cuda["benchmarks"]
    base.write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out"
    argv = ["compare", str(base), str(CPU), "-o", str(out), "--ignore", "device"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("freeze-bench: --ignore: in the base run") and err.count("\n") == 1
    assert not out.exists()


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "report" in text and "compare" in text and "exit codes" in text
    assert main(["compare", "--help"]) == EXIT_OK
    assert "--ignore" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench_lib",
            "report",
            str(tmp_path / "absent.json"),
            "-o",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == EXIT_INPUT
    assert done.stderr == f"freeze-bench: {tmp_path / 'absent.json'}: no such file\n"


def test_fixtures_are_valid_pytest_benchmark_files() -> None:
    """What the suite writes (suite_quick_trimmed.json is a real run, trimmed) and what these
    tests read stay files pytest-benchmark's own ``compare`` command reads: freeze-bench is a
    well-behaved client of that format."""
    exe = shutil.which("pytest-benchmark")
    if exe is None:
        pytest.skip("pytest-benchmark's command line is not installed")
    names = ["suite_quick_trimmed.json", "cpu_run.json", "cuda_run.json", "old_schema.json"]
    done = subprocess.run(
        [exe, "compare", *(str(FIXTURES / n) for n in names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "mlp-d4-w64-b16-middle-requires_grad-adamw-cpu-float32" in done.stdout
    assert "mlp-d4-w64-b16-prefix-no_grad-adamw-cuda-float32" in done.stdout


def test_report_header_counts_folded_and_resumed_cases(tmp_path: Path) -> None:
    data = json.loads(CPU.read_text(encoding="utf-8"))
    data["freeze_bench"].update(
        combinations_folded=7, combinations_folded_why="they are the baseline", resumed=3
    )
    run = tmp_path / "run.json"
    run.write_text(json.dumps(data), encoding="utf-8")
    assert main(["report", str(run), "-o", str(tmp_path / "out")]) == EXIT_OK
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert (
        "| **folded into baselines** | 7 pattern × mechanism combinations "
        "(they are the baseline) |" in md
    )
    assert "| **resumed** | 3 cases carried over from the journal |" in md
