"""Faults during a sweep: OOM and errors are recorded, the journal survives SIGKILL, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench_lib.journal import Journal, JournalError, read_journal

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--bench-profile", "quick", "--bench-model", "mlp", "--bench-parallel", "none",
    "--bench-width", "16",
    "--bench-batch", "4", "--bench-optimizer", "adamw", "--bench-pairs", "6",
    "--bench-time", "0.01", "--bench-adapter", "none", "--bench-compile", "off",
]  # fmt: skip


def pytest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pytest_cmd(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300
    )


def all_entries(data: dict) -> dict[str, dict]:
    entries = data["benchmarks"] + data["freeze_bench"]["failed"]
    return {e["extra_info"]["case_id"]: e["extra_info"] for e in entries}


@pytest.mark.slow
def test_injected_oom_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "oom.json"
    proc = run(*SMALL, "--bench-depth", "4,5", "--bench-pattern", "none,prefix",
               "--bench-mechanism", "requires_grad", "-p", "oom_plugin",
               f"--benchmark-json={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = all_entries(json.loads(out.read_text()))
    assert len(records) == 4
    for case_id, r in records.items():
        if "-d5-" in case_id:
            assert r["status"] == "oom", r
            assert "injected by oom_plugin" in r["status_message"]
            assert r["peak_memory_bytes"] is None and r["time_ratio"] is None
        else:
            assert r["status"] == "ok" and r["peak_memory_bytes"] > 0
    assert "2 xfailed" in proc.stdout and "2 passed" in proc.stdout
    # The journal beside the JSON holds the same four cases.
    journal = read_journal(f"{out}.journal.jsonl")
    assert journal.case_ids() == set(records)
    assert journal.header["machine_info"]["torch_version"]


@pytest.mark.slow
def test_sigkilled_sweep_keeps_its_journal_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    journal_path = Path(f"{out}.journal.jsonl")
    args = [*SMALL, "--bench-mechanism", "no_grad,requires_grad", f"--benchmark-json={out}"]
    proc = subprocess.Popen(
        pytest_cmd(*args), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if journal_path.exists() and len(journal_path.read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sweep journaled nothing in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    first = read_journal(journal_path)
    done = first.case_ids()
    assert len(done) >= 3
    assert all(e["stats"]["data"] for e in first.entries)

    resumed = run(*args, "--bench-resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"{len(done)} resumed from journal" in resumed.stdout
    data = json.loads(out.read_text())
    records = all_entries(data)
    assert done < set(records)
    assert len(records) == 13  # baseline + (5 patterns + explicit blocks 0, 2) x 2 mechanisms
    assert data["freeze_bench"]["resumed"] == len(done)
    # The journal now holds every case exactly once, the resumed ones untouched.
    final = read_journal(journal_path)
    ids = [e["extra_info"]["case_id"] for e in final.entries]
    assert sorted(ids) == sorted(records) and len(ids) == len(set(ids))
    assert final.entries[: len(first.entries)] == first.entries

    # Resuming a narrower run carries over only the cases it plans, and runs none again.
    narrow = run(*args, "--bench-resume", "--bench-pattern", "none")
    assert narrow.returncode == 0, narrow.stdout[-2000:] + narrow.stderr[-2000:]
    assert "0 cases measured, 0 recorded as oom/error, 0 skipped, 1 resumed" in narrow.stdout
    only = all_entries(json.loads(out.read_text()))
    assert list(only) == ["mlp-d4-w16-b4-none-none-adamw-cpu-float32"]


def test_journal_drops_only_a_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, {"machine_info": {}}, resume=False)
    j.append({"extra_info": {"case_id": "a"}, "stats": None})
    j.append({"extra_info": {"case_id": "b"}, "stats": None})
    j.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"extra_info": {"case_id": "c"')  # a write cut short by SIGKILL
    contents = read_journal(path)
    assert contents.case_ids() == {"a", "b"} and contents.truncated_line == 4
    # Resuming repairs the tail before appending.
    j = Journal(path, {}, resume=True)
    j.append({"extra_info": {"case_id": "d"}, "stats": None})
    j.close()
    assert read_journal(path).case_ids() == {"a", "b", "d"}


def test_a_new_run_keeps_the_old_journal_as_prev(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal(path, {}, resume=False).append({"extra_info": {"case_id": "old"}})
    Journal(path, {}, resume=False).close()
    assert read_journal(path.with_name("j.jsonl.prev")).case_ids() == {"old"}
    assert read_journal(path).case_ids() == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("{not json\n", "journal line 1 is not valid JSON"),
        ('{"benchmarks": []}\n', "no journal_version"),
        ('{"journal_version": 9}\n', "journal_version 9 is not one this freeze-bench knows"),
        ('{"journal_version": 1}\n{bad\n{"extra_info": {}}\n', "journal line 2 is not valid"),
        ('{"journal_version": 1}\n{"extra_info": {}}\n{bad\n', "journal line 3 is not valid"),
    ],
)
def test_bad_journals_name_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(JournalError, match=message) as e:
        read_journal(path)
    assert str(path) in str(e.value)


def test_resume_without_a_journal_is_a_usage_error() -> None:
    proc = run("--bench-profile", "quick", "--bench-resume", "--collect-only")
    assert proc.returncode == 4
    assert "--bench-resume needs a journal" in proc.stderr
