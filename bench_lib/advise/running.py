"""Run the suite's own cases for ``advise``: pytest in a subprocess, with a progress line.

The run is a normal freeze-bench run (``benchmarks/test_freeze.py`` with ``--bench-*``
options), so its JSON and journal work with ``report``, ``compare``, ``pytest-benchmark
compare`` and ``--bench-resume``. Progress comes from the journal (one JSON line per finished
case) as it grows. Plain Python: no torch here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import input_error, usage_error

__all__ = ["BENCH_FILE", "RunResult", "benchmarks_dir", "run_cases"]

BENCH_FILE = "test_freeze.py"


def benchmarks_dir() -> Path:
    """The suite's ``benchmarks`` directory, next to the ``bench_lib`` package; an input error
    when it is not there (an installed wheel without the repository)."""
    root = Path(__file__).resolve().parents[2]
    found = root / "benchmarks" / BENCH_FILE
    if not found.is_file():
        raise input_error(
            f"{found}: the suite's benchmarks are not next to bench_lib; advise runs them, so "
            "run it from a checkout of freeze-bench"
        )
    return found.parent


@dataclass(frozen=True)
class RunResult:
    """The pytest run: its exit code, wall seconds, and the log's path."""

    returncode: int
    seconds: float
    log: str


def _journal_lines(path: str) -> list[dict[str, object]]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == 0 or not line.endswith("\n"):
                continue  # the header; a line still being written
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Progress:
    """One progress line on ``stream``: rewritten in place on a terminal, one line per change
    elsewhere."""

    def __init__(self, stream: TextIO | None, total: int, label: str) -> None:
        self.stream, self.total, self.label = stream, total, label
        self.tty = bool(stream is not None and stream.isatty())
        self.shown = ""
        self.done = -1

    def show(self, done: int, last: str, elapsed: float) -> None:
        if self.stream is None:
            return
        left = (
            f"about {_fmt_s(elapsed / done * (self.total - done))} left"
            if done
            else "estimating time left"
        )
        line = f"advise{self.label}: {done}/{self.total} cases done{last}, {left}"
        if line == self.shown or (not self.tty and done == self.done):
            return  # elsewhere than a terminal: one line per finished case
        self.done = done
        self.shown = line
        if self.tty:
            self.stream.write("\r\033[K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_cases(
    options: Sequence[str],
    json_path: str,
    log_path: str,
    total: int,
    progress: TextIO | None,
    label: str = "",
) -> RunResult:
    """Run ``pytest benchmarks/test_freeze.py`` with ``options`` writing ``json_path`` (and its
    journal beside it), its output to ``log_path``; show progress for ``total`` cases. A usage
    error from the suite (pytest exit 4) becomes a usage error with the suite's own line."""
    bench = benchmarks_dir()
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(bench / BENCH_FILE),
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rN",
        f"--benchmark-json={json_path}",
        *options,
    ]
    journal = f"{json_path}.journal.jsonl"
    if os.path.exists(journal):
        os.unlink(journal)  # a fresh run: an old journal would count as done
    bar = Progress(progress, total, label)
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=bench.parent, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            while proc.poll() is None:
                entries = _journal_lines(journal)
                last = str(entries[-1]["name"]) if entries else ""
                bar.show(len(entries), f" (last {last})" if last else "", time.perf_counter() - t0)
                time.sleep(0.25)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            bar.close()
    seconds = time.perf_counter() - t0
    if proc.returncode in (3, 4):  # internal error, usage error
        with open(log_path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if "freeze-bench:" in ln or "Error" in ln]
        why = lines[-1] if lines else f"pytest exited {proc.returncode}"
        raise usage_error(f"the suite refused the run: {why} (log: {log_path})")
    if not os.path.exists(json_path):
        raise input_error(
            f"the suite wrote no {json_path} (exit {proc.returncode}; log: {log_path})"
        )
    return RunResult(proc.returncode, seconds, log_path)
